"Datasets over a prerendered store and on the fly, and `medvox to-nifti`: exact output folders, bad samples, provenance, file-system failures."
import csv, shutil
from pathlib import Path
import h5py, numpy as np, pytest, torch
from fs_faults import medvox_here


@pytest.fixture
def mv(capsys):
    "`medvox` in this process (see fs_faults.medvox_here)."
    return lambda *args, check=None: medvox_here(capsys, *args, check=check)


def nifti_files(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob('*.nii.gz'))


def read_rows(path):
    with open(path, newline='') as f: return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def store(samples, tmp_path_factory):
    "The embedded samples prerendered at 24^3, threshold 0, in 3 batches."
    from medvox_nb.core import main
    d = tmp_path_factory.mktemp('store')/'pre'
    assert main(['prerender', '--input-h5', str(samples/'smlm'/'smlm_samples.h5'), '--output-dir', str(d), '--voxel-size', '24',
                 '--threshold', '0', '--batch-size', '4']) == 0
    return d


def test_dataset_two_workers_and_on_the_fly(shared_data, tmp_path):
    from medvox_nb.prerender import PrerenderConfig, prerender
    from medvox_nb.dataset import DataConfig, make_dataset
    data = DataConfig(input_h5=str(shared_data/'smlm'), voxel_size=48, sigma=1.0)
    prerender(data.input_h5, data, PrerenderConfig(batch_size=1, threshold=0.0), tmp_path/'s')
    pre = make_dataset(DataConfig(use_prerendered=True, prerendered_dir=str(tmp_path/'s')))
    fly = make_dataset(data)
    one = list(torch.utils.data.DataLoader(pre, batch_size=1, num_workers=0))
    two = list(torch.utils.data.DataLoader(pre, batch_size=1, num_workers=2))
    assert [int(i) for _, i in one] == [int(i) for _, i in two] == [0, 1]
    for (a, _), (b, _) in zip(one, two): assert torch.equal(a, b)
    for k in range(2): assert torch.allclose(pre[k][0], fly[k][0], atol=1e-6)
    assert one[0][0].shape == (1, 1, 48, 48, 48)
    assert [pre.describe(k)['name'] for k in range(2)] == ['CaulobacterC_2_R09_MoernerLab.csv', 'ThunderSTORM_TS3D.csv']
    assert pre.describe(1) == fly.describe(1) and Path(pre.describe(1)['source']) == (shared_data/'smlm'/'ThunderSTORM_TS3D.csv').resolve()


def test_to_nifti_cli(store, tmp_path, mv):
    import nibabel as nib
    mv('to-nifti', '--prerendered-dir', store, '-o', tmp_path/'nii', '--val-fraction', '0.25', check=0)
    tr, va = sorted((tmp_path/'nii'/'train').glob('*.nii.gz')), sorted((tmp_path/'nii'/'val').glob('*.nii.gz'))
    assert len(tr) >= 1 and len(va) >= 1
    img = nib.load(tr[0])
    with h5py.File(store/'voxels_batch_0000.h5') as f: aff = f['affines'][0]
    assert img.shape == (24, 24, 24) and np.allclose(np.diag(img.affine)[:3], np.diag(aff)[:3] / 1e6)
    assert img.header.get_xyzt_units()[0] == 'mm'
    assert (tmp_path/'nii'/'config.yaml').exists()


def test_to_nifti_on_the_fly_matches_the_store(samples, store, tmp_path, mv):
    import nibabel as nib
    mv('to-nifti', '--prerendered-dir', store, '-o', tmp_path/'a', check=0)
    mv('to-nifti', '--input-h5', samples/'smlm'/'smlm_samples.h5', '-o', tmp_path/'b', '--voxel-size', '24', check=0)
    fa, fb = nifti_files(tmp_path/'a'), nifti_files(tmp_path/'b')
    assert fa == fb and len(fa) == 10
    for x in fa:
        a, b = nib.load(tmp_path/'a'/x), nib.load(tmp_path/'b'/x)
        assert np.allclose(a.affine, b.affine) and np.allclose(a.get_fdata(), b.get_fdata(), atol=1e-5 * b.get_fdata().max())
    ra, rb = read_rows(tmp_path/'a'/'samples.csv'), read_rows(tmp_path/'b'/'samples.csv')
    assert ra == rb                                                       # same names, sources, splits either way
    p = mv('to-nifti', '--prerendered-dir', store, '-o', tmp_path/'c', '--voxel-size', '32')
    assert p.returncode == 2 and '--voxel-size applies to voxelizing on the fly' in p.stderr


def test_to_nifti_rerun_leaves_exactly_this_runs_files(store, tmp_path, mv):
    "Regression: a second export into the same folder left 11-12 files where 10 were reported, and stale volumes in val/."
    out = tmp_path/'nii'
    mv('to-nifti', '--prerendered-dir', store, '-o', out, '--val-fraction', '0.3', '--seed', '1', check=0)
    first = nifti_files(out)
    p = mv('to-nifti', '--prerendered-dir', store, '-o', out, '--val-fraction', '0.1')
    assert p.returncode == 2 and 'not empty' in p.stderr and '--overwrite' in p.stderr and nifti_files(out) == first
    p = mv('to-nifti', '--prerendered-dir', store, '-o', out, '--val-fraction', '0.1', '--overwrite', check=0)
    assert '9 train, 1 val NIfTI volumes, 0 skipped' in p.stdout
    files, rows = nifti_files(out), read_rows(out/'samples.csv')
    assert len(files) == 10 and files == sorted(r['path'] for r in rows)   # exactly the reported volumes
    assert len({Path(f).name for f in files}) == 10                      # each volume in one split only
    assert sorted(p.name for p in out.iterdir()) == ['config.yaml', 'samples.csv', 'train', 'val']
    assert not [q for q in tmp_path.iterdir() if q.name.startswith('.')]  # no temporary folder left
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.txt').write_text('keep')
    p = mv('to-nifti', '--prerendered-dir', store, '-o', tmp_path/'mine', '--overwrite')
    assert p.returncode == 2 and 'not a to-nifti output' in p.stderr and (tmp_path/'mine'/'notes.txt').read_text() == 'keep'


def test_samples_csv_names_each_sample_and_its_source(samples, store, tmp_path, mv):
    mv('to-nifti', '--prerendered-dir', store, '-o', tmp_path/'nii', check=0)
    rows = read_rows(tmp_path/'nii'/'samples.csv')
    assert list(rows[0]) == ['index', 'split', 'path', 'name', 'label', 'source', 'source_sample']
    src = str((samples/'smlm'/'smlm_samples.h5').resolve())
    assert [(r['index'], r['name'], r['source'], r['source_sample']) for r in rows] == [(str(i), f'smlm_samples.h5#{i}', src, str(i)) for i in range(10)]
    assert rows[0]['label'].startswith('ThunderSTORM_TS3D.csv: random 4000')


def test_to_nifti_on_the_fly_skips_a_bad_sample(samples, tmp_path, mv):
    "Regression: on the fly, the first bad sample stopped the export with partial output; now it is skipped and recorded."
    d = tmp_path/'clouds'; d.mkdir()
    shutil.copy(samples/'smlm'/'thunderstorm_excerpt.csv', d/'a_ts.csv')
    (d/'b_empty.csv').write_text('x,y,z\n')
    (d/'c_far.csv').write_text('x,y,z\n1e9,0,0\n-1e9,5,5\n')
    shutil.copy(samples/'smlm'/'vlume_excerpt.csv', d/'d_vlume.csv')
    p = mv('to-nifti', '--input-h5', d, '-o', tmp_path/'nii', '--voxel-size', '16', '--origin', 'zero', '--val-fraction', '0')
    assert p.returncode == 2, p.stderr
    skipped = [l for l in p.stderr.splitlines() if l.startswith('skipped:')]
    assert len(skipped) == 2 and 'b_empty.csv' in skipped[0] and 'c_far.csv' in skipped[1], p.stderr
    assert '2 train, 0 val NIfTI volumes, 2 skipped' in p.stdout
    assert [r['name'] for r in read_rows(tmp_path/'nii'/'samples.csv')] == ['a_ts.csv', 'd_vlume.csv']
    assert [r['name'] for r in read_rows(tmp_path/'nii'/'skipped.csv')] == ['b_empty.csv', 'c_far.csv']
    assert nifti_files(tmp_path/'nii') == ['train/sample_00000.nii.gz', 'train/sample_00003.nii.gz']


# --- file-system failures: one line naming the path, exit 2

def test_output_is_a_file_or_under_a_file(store, tmp_path, capsys):
    from fs_faults import run_main, assert_one_line
    (tmp_path/'afile').write_text('x')
    assert_one_line(*run_main(capsys, 'to-nifti', '--prerendered-dir', store, '-o', tmp_path/'afile'), tmp_path/'afile', 'is a file, not a folder')
    assert_one_line(*run_main(capsys, 'to-nifti', '--prerendered-dir', store, '-o', tmp_path/'afile'/'nii'),
                    tmp_path/'afile'/'nii', 'a parent of this path is a file')


@pytest.mark.parametrize('err,words', [(13, 'permission denied'), (30, 'read-only'), (28, 'no space left')])
def test_injected_fs_errors(store, tmp_path, capsys, monkeypatch, err, words):
    from fs_faults import run_main, assert_one_line, inject
    (tmp_path/'out').mkdir()
    inject(monkeypatch, tmp_path/'out', err)
    assert_one_line(*run_main(capsys, 'to-nifti', '--prerendered-dir', store, '-o', tmp_path/'out'/'nii'), tmp_path/'out'/'nii', words)
    monkeypatch.undo()
    assert list((tmp_path/'out').iterdir()) == []                       # nothing half-written, no temporary folder


def test_real_read_only_and_full_disk(store, tmp_path, capsys):
    from fs_faults import run_main, assert_one_line, read_only_dir, full_dir
    with read_only_dir(tmp_path/'ro') as ro:
        assert_one_line(*run_main(capsys, 'to-nifti', '--prerendered-dir', store, '-o', ro/'nii'), ro/'nii', 'read-only')
    with full_dir(tmp_path/'full', '24k') as full:
        assert_one_line(*run_main(capsys, 'to-nifti', '--prerendered-dir', store, '-o', full/'nii'), full/'nii', 'no space left')
        assert list(full.iterdir()) == []
