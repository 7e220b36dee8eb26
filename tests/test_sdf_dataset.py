"""Sparse training datasets: SparseSDFDataset over `medvox sdf` outputs (and the seed's files), CTWindowSparseSDF
over CT-stage outputs in both window formats, reproducible subsampling, 2-worker loaders equal to 0 workers, and
the batch layout that spconv's SparseConvTensor takes."""
import shutil
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from conftest import ROOT
from medvox_nb.core import ConfigError, StoreError
from medvox_nb.sdf import compute as C
from medvox_nb.sdf.dataset import SparseSDFDataset, CTWindowSparseSDF, sparse_collate, _sparse_from_volume

pytestmark = pytest.mark.skipif(not C.sdf_kernel_available(), reason='medvox_nb._sdf not built')
SMALL = ROOT/'data_samples'/'ct'


def medvox_main(*args) -> int:
    "`medvox ARGS` in this process (core.main, the console script's entry point): no interpreter start-up."
    from medvox_nb.core import main
    return main([str(a) for a in args])


@pytest.fixture(scope='module')
def sdf_out(tmp_path_factory):
    out = tmp_path_factory.mktemp('sdf')
    assert medvox_main('sdf', SMALL/'ct_small_seg.nii.gz', '--output_dir', out, '--resolutions', '32,48', '--labels', '1,2,3,5,6') == 0
    return out


def _ct(tmp_path, *flags):
    raw = tmp_path/'raw'/'ds'/'case_a'; raw.mkdir(parents=True)
    shutil.copy(SMALL/'ct_small.nii.gz', raw/'ct.nii.gz'); shutil.copy(SMALL/'ct_small_seg.nii.gz', raw/'ct_seg.nii.gz')
    assert medvox_main('ct', 'preprocess', tmp_path/'raw', tmp_path/'ct', '--default_resolution', '64', *flags) == 0
    return tmp_path/'ct'


@pytest.fixture(scope='module')
def ct_default(tmp_path_factory):
    "The CT stage's output of the embedded sample at 64³, default options (packed windows)."
    return _ct(tmp_path_factory.mktemp('ct'))


def _same_batches(ds, batch_size=2):
    a = list(DataLoader(ds, batch_size=batch_size, num_workers=0, collate_fn=sparse_collate))
    b = list(DataLoader(ds, batch_size=batch_size, num_workers=2, collate_fn=sparse_collate))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x['coords'], y['coords']) and torch.equal(x['feats'], y['feats']) and x['instance'] == y['instance']
    return a


def test_sparse_sdf_dataset_items_and_two_worker_loader(sdf_out):
    ds = SparseSDFDataset(str(sdf_out), resolution=48, max_points=2000, seed=3)
    assert len(ds) == 5 and ds.instances == sorted(ds.instances)
    for i in range(len(ds)):
        it = ds[i]
        full = C.load_sparse_sdf(ds.files[i])
        n = min(2000, len(full['sparse_index']))
        assert it['sparse_index'].shape == (n, 3) and it['sparse_index'].dtype == torch.int32 and it['sparse_sdf'].shape == (n, 1)
        key = lambda a: np.asarray(a, np.int64) @ np.array([48 * 48, 48, 1])
        pos = np.searchsorted(np.sort(key(full['sparse_index'])), key(it['sparse_index']))
        assert np.array_equal(np.sort(key(full['sparse_index']))[pos], key(it['sparse_index']))   # a subset of the file
    batches = _same_batches(ds)
    b = batches[0]
    assert b['coords'].dtype == torch.int32 and b['coords'].shape[1] == 4 and b['feats'].dtype == torch.float32
    assert set(b['coords'][:, 0].tolist()) == {0, 1} and b['batch_size'] == 2
    assert torch.equal(b['batch_idx'], b['coords'][:, 0].long()) and torch.equal(b['sparse_index'], b['coords'][:, 1:].long())
    ds.set_epoch(1)
    assert not torch.equal(ds[0]['sparse_index'], batches[0]['coords'][batches[0]['coords'][:, 0] == 0, 1:])
    _same_batches(ds)                                                      # the new epoch, still worker-independent


def test_sparse_sdf_dataset_filters_and_seed_files(sdf_out, tmp_path):
    n32 = {i: C.sparse_sdf_points(f) for i, f in zip(*[SparseSDFDataset(str(sdf_out), 32).instances, SparseSDFDataset(str(sdf_out), 32).files])}
    cut = sorted(n32.values())[2]
    assert len(SparseSDFDataset(str(sdf_out), 32, min_points=cut)) == sum(v >= cut for v in n32.values())
    # the seed's layout: metadata.csv + sparse_sdf/{sha256}_r{res}.npz with only its three keys
    seed = tmp_path/'seed'; (seed/'sparse_sdf').mkdir(parents=True)
    for k, f in enumerate(sorted((sdf_out/'sparse_sdf').glob('*_r32.npz'))):
        d = C.load_sparse_sdf(f)
        np.savez_compressed(seed/'sparse_sdf'/f'h{k}_r32.npz', sparse_sdf=d['sparse_sdf'], sparse_index=d['sparse_index'], resolution=32)
    (seed/'metadata.csv').write_text('sha256,sparse_sdf_computed,r32_num_points\nh0,True,10\nh1,False,10\nh2,True,10\n')
    ds = SparseSDFDataset(str(seed), 32, min_points=5)
    assert ds.instances == ['h0', 'h2'] and len(ds[1]['sparse_index']) > 0
    assert len(SparseSDFDataset([seed/'sparse_sdf'/'h3_r32.npz'], 32)) == 1     # a list of files
    with pytest.raises(StoreError, match='resolution'): SparseSDFDataset([seed/'sparse_sdf'/'h3_r32.npz'], 48)[0]


@pytest.mark.parametrize('fmt', ['packed', 'npy'])
def test_ct_window_dataset_both_formats(tmp_path, ct_default, fmt):
    ct = ct_default if fmt == 'packed' else _ct(tmp_path, '--window_format', fmt)
    from medvox_nb.ct.preprocess import load_volume
    for w in ('soft_tissue', 'bone'):
        ds = CTWindowSparseSDF(str(ct), resolution=64, window_type=w, max_points=None, min_points=1)
        assert len(ds) == 1 and ds.files[0].name.endswith('.npy' if fmt == 'npy' else '.vol.npz')
        it = ds[0]
        vol = load_volume(ds.files[0])
        ref = np.argwhere(vol > 0)
        got = it['sparse_index'].numpy()
        assert np.array_equal(got[np.lexsort(got.T[::-1])], ref) and it['sparse_sdf'].unique().tolist() == [1.0]
    ds = CTWindowSparseSDF(str(ct), resolution=64, window_type='soft_tissue', max_points=700, min_points=1)
    s = ds[0]
    assert len(s['sparse_index']) == 700 and torch.equal(ds[0]['sparse_index'], s['sparse_index'])


def test_ct_window_scaled_mode_and_loader(tmp_path):
    ct = _ct(tmp_path, '--window_mode', 'scaled')
    ds = CTWindowSparseSDF(str(ct), resolution=64, window_type='soft_tissue', max_points=1500, min_points=1)
    v = ds[0]['sparse_sdf']
    assert v.min() > 0 and v.max() <= 1 and len(v.unique()) > 10           # the [0, 1] window values, not 0/1
    ds2 = torch.utils.data.ConcatDataset([ds, ds])
    a = list(DataLoader(ds2, batch_size=2, num_workers=0, collate_fn=sparse_collate))
    b = list(DataLoader(ds2, batch_size=2, num_workers=2, collate_fn=sparse_collate))
    assert all(torch.equal(x['coords'], y['coords']) and torch.equal(x['feats'], y['feats']) for x, y in zip(a, b))


def test_ct_window_min_points_and_bad_arguments(tmp_path, ct_default):
    ct = ct_default
    assert len(CTWindowSparseSDF(str(ct), resolution=64, window_type='brain', min_points=10**9)) == 0   # recorded ratio too small
    assert len(CTWindowSparseSDF(str(ct), resolution=512, window_type='lung')) == 0                   # no case at 512³
    with pytest.raises(ConfigError, match='window_type'): CTWindowSparseSDF(str(ct), window_type='liver')
    with pytest.raises(Exception, match='does not exist'): CTWindowSparseSDF(str(tmp_path/'nope'))


def test_sparse_from_volume_subsamples_plane_by_plane(tmp_path):
    rng = np.random.default_rng(0)
    vol = (rng.random((40, 30, 20)) < 0.3).astype(np.uint8)
    np.save(tmp_path/'v.npy', vol)
    mm = np.load(tmp_path/'v.npy', mmap_mode='r')
    keep_all = lambda n, i: None
    idx, val = _sparse_from_volume(mm, keep_all, 0)
    assert np.array_equal(idx, np.argwhere(vol > 0)) and (val == 1).all()
    pick = lambda n, i: np.sort(np.random.default_rng(i).choice(n, 500, replace=False))
    idx2, _ = _sparse_from_volume(mm, pick, 4)
    ref = np.argwhere(vol > 0)[pick(int(vol.sum()), 4)]
    assert np.array_equal(idx2, ref)


def test_batch_feeds_spconv(sdf_out):
    spconv = pytest.importorskip('spconv.pytorch')
    ds = SparseSDFDataset(str(sdf_out), resolution=32)
    b = sparse_collate([ds[0], ds[1]])
    x = spconv.SparseConvTensor(b['feats'], b['coords'], [32, 32, 32], b['batch_size'])
    dense = x.dense()                                                      # (B, C, X, Y, Z)
    assert dense.shape == (2, 1, 32, 32, 32)
    c = b['coords'][0].long()
    assert dense[c[0], 0, c[1], c[2], c[3]] == b['feats'][0, 0]
    conv = spconv.SubMConv3d(1, 4, 3, indice_key='s')
    y = conv(x)
    assert y.features.shape == (len(b['feats']), 4) and torch.equal(y.indices, x.indices)
