"""CT preprocessing (`medvox ct preprocess`): 512³ windows bit for bit against NumPy, the real CT and DICOM series
(geometry checked against the DICOM tags), every dataset layout and mask format, SIGKILL + resume, bad cases,
shards, worker processes, the seeds' positional form, and reading datasets the seeds' scripts wrote."""
import csv, io, json, os, shutil, signal, subprocess, time
from pathlib import Path
import numpy as np
import nibabel as nib
from scipy import sparse
from conftest import MEDVOX, ROOT, run_medvox
from medvox_nb.core import DependencyError
from medvox_nb.ct.preprocess import (WINDOWS, TOTALSEG_CLASSES, window_filename, load_volume, load_case, find_cases,
                                     volume_info, _sdf_module)

TOTALSEG_MAP = ROOT/'configs'/'ct'/'organ_mapping_totalseg.json'


def ref_window(hu, name):
    "The seeds' apply_window_binarization, written out: 1 on the inclusive range [L - W/2, L + W/2]."
    W, L = WINDOWS[name]['window_width'], WINDOWS[name]['window_level']
    return ((hu >= L - W / 2.0) & (hu <= L + W / 2.0)).astype(np.uint8)


def pad_end(a, res, value):
    return np.pad(a, [(0, res - s) for s in a.shape], constant_values=value)


def ref_normalize(hu):
    "The seeds' normalize_ct (foreground z-score) as a function, fitted on the scan's voxels."
    flat = hu.flatten()
    fg = flat[flat > np.mean(flat)]
    lo, hi, mu, sd = np.percentile(fg, 0.05), np.percentile(fg, 99.95), np.mean(fg), max(np.std(fg), 1e-8)
    return lambda x: ((np.clip(x, lo, hi) - mu) / sd).astype(np.float32)


def assert_padded(got, core, fill, res=512):
    """`got` equals the array that holds `core` at the origin and `fill` elsewhere, i.e. an elementwise function
    applied to the scan padded at the end: checked region by region, without building the padded reference."""
    x, y, z = core.shape
    assert got.shape == (res,) * 3 and got.dtype == core.dtype, (got.shape, got.dtype, core.dtype)
    assert np.array_equal(got[:x, :y, :z], core)
    for region in (got[x:], got[:x, y:], got[:x, :y, z:]): assert (region == fill).all()


def assert_seed_npy(path, shape, dtype):
    "The file is exactly what np.save writes for a C-order array of this shape and dtype: header, then raw data."
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(np.empty(shape, dtype)))
    with open(path, 'rb') as f: assert f.read(len(head.getvalue())) == head.getvalue()
    assert path.stat().st_size == len(head.getvalue()) + int(np.prod(shape)) * np.dtype(dtype).itemsize


def small(samples):
    img, seg = nib.load(samples/'ct'/'ct_small.nii.gz'), nib.load(samples/'ct'/'ct_small_seg.nii.gz')
    return np.asarray(img.dataobj), np.asarray(seg.dataobj), img.affine


def save_nii(path, a, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(a, affine), str(path))
    return path


def nnunet_dataset(root, samples, n=4, with_labels=True):
    "An nnU-Net dataset of `n` distinct cases made from the real sample (rolled along x by k voxels)."
    hu, seg, aff = small(samples)
    for k in range(n):
        save_nii(root/'imagesTr'/f'case_{k:03d}_0000.nii.gz', np.roll(hu, 3 * k, axis=0), aff)
        if with_labels: save_nii(root/'labelsTr'/f'case_{k:03d}.nii.gz', np.roll(seg, 3 * k, axis=0), aff)
    return root


def snapshot(out: Path) -> dict:
    "Every output file's content, minus what legitimately differs between runs (timings, creation time)."
    snap = {}
    for p in sorted(out.rglob('*')):
        if not p.is_file() or p.name == 'ct_config.yaml': continue
        rel = p.relative_to(out).as_posix()
        if p.name == 'info.json':
            j = json.loads(p.read_text()); j.pop('processing_time_sec'); snap[rel] = j
        elif p.name == 'dataset_config.json':
            j = json.loads(p.read_text()); j.pop('created'); snap[rel] = j
        elif p.name == 'failed_cases.json':
            j = json.loads(p.read_text()); j.pop('timestamp'); snap[rel] = j
        elif p.name == 'metadata.csv':
            snap[rel] = [{k: v for k, v in r.items() if k != 'processing_time_sec'} for r in csv.DictReader(io.StringIO(p.read_text()))]
        else: snap[rel] = p.read_bytes()
    return snap


def test_windows_and_normalised_ct_at_512_equal_numpy_bit_for_bit(samples, tmp_path):
    raw = tmp_path/'raw'; raw.mkdir()
    shutil.copy(samples/'ct'/'ct_small.nii.gz', raw/'abdomen.nii.gz')
    run_medvox('ct', 'preprocess', raw, tmp_path/'npy', '--window_format', 'npy', check=0)
    run_medvox('ct', 'preprocess', raw, tmp_path/'packed', check=0)
    hu = np.asarray(nib.load(raw/'abdomen.nii.gz').dataobj)
    air = np.asarray(-1000, hu.dtype)
    for fmt in ('npy', 'packed'):
        case = tmp_path/fmt/'raw'/'processed'/'abdomen'
        for name in WINDOWS:
            f = case/'windows'/(window_filename(name) + ('.npy' if fmt == 'npy' else '.vol.npz'))
            if fmt == 'npy': assert_seed_npy(f, (512,) * 3, np.uint8)                  # the seeds' file, as np.save writes it
            else: assert f.stat().st_size < 200_000, (name, f.stat().st_size)         # vs 128 MiB dense
            assert_padded(load_volume(case/'windows'/window_filename(name)), ref_window(hu, name), ref_window(air, name))
        norm = ref_normalize(hu)
        if fmt == 'npy': assert_seed_npy(case/'ct_normalized_512.npy', (512,) * 3, np.float32)
        assert_padded(load_volume(case/'ct_normalized_512'), norm(hu), norm(air))
        info = json.loads((case/'info.json').read_text())
        assert info['adapted_shape'] == [512, 512, 512] and info['pad_after'] == [451, 461, 482] and info['pad_before'] == [0, 0, 0]
        assert info['air_hu'] == -1000 and info['window_format'] == fmt
        assert info['windows']['lung']['fill'] == 1 and info['windows']['bone']['fill'] == 0    # air is inside the lung window only


def test_example_ct_end_to_end_512(shared_data, tmp_path):
    raw = tmp_path/'raw'; raw.mkdir()
    (raw/'example_ct.nii.gz').symlink_to(shared_data/'ct'/'example_ct.nii.gz')
    p = run_medvox('ct', 'preprocess', raw, tmp_path/'out', check=0)
    assert '1 cases processed, 0 kept, 0 skipped' in p.stdout
    img = nib.load(shared_data/'ct'/'example_ct.nii.gz')
    hu = np.asarray(img.dataobj)
    air = np.asarray(-1000, hu.dtype)
    c = load_case(tmp_path/'out'/'raw'/'processed'/'example_ct')
    assert sorted(c['windows']) == sorted(WINDOWS)
    for name, path in c['windows'].items(): assert_padded(load_volume(path), ref_window(hu, name), ref_window(air, name))
    norm = ref_normalize(hu)
    assert_padded(load_volume(c['ct']), norm(hu), norm(air))
    assert np.allclose(c['affine'], img.affine) and c['info']['pad_after'] == [390, 411, 400]
    rows = list(csv.DictReader(open(tmp_path/'out'/'raw'/'metadata.csv')))
    assert len(rows) == 1 and rows[0]['case_id'] == 'example_ct' and rows[0]['resolution'] == '512'
    assert json.loads(rows[0]['original_shape']) == [122, 101, 112] and np.allclose(json.loads(rows[0]['affine']), img.affine)
    assert json.loads(rows[0]['windows_processed']) == list(WINDOWS) and rows[0]['has_segmentation'] == 'False'
    conf = json.loads((tmp_path/'out'/'raw'/'dataset_config.json').read_text())
    assert conf['num_cases'] == 1 and conf['air_hu'] == -1000 and conf['windows']['lung']['file_stem'] == 'lung_w1500_l-600'


def test_real_dicom_series_geometry_and_hu_against_the_tags(shared_data, tmp_path):
    import pydicom
    raw = tmp_path/'raw'; raw.mkdir()
    (raw/'series1').symlink_to(shared_data/'ct'/'dicom', target_is_directory=True)
    run_medvox('ct', 'preprocess', raw, tmp_path/'out', '--save_original', check=0)
    c = load_case(tmp_path/'out'/'raw'/'processed'/'series1')
    assert c['info']['source_format'] == 'dicom' and c['info']['original_shape'] == [512, 512, 20] and c['resolution'] == 512
    hu = load_volume(tmp_path/'out'/'raw'/'processed'/'series1'/'ct_original_512')
    inv = np.linalg.inv(c['affine'])
    rng = np.random.default_rng(0)
    slices = [pydicom.dcmread(str(f)) for f in sorted((shared_data/'ct'/'dicom').iterdir())]
    for d in [slices[i] for i in rng.choice(len(slices), 6, replace=False)]:
        px = d.pixel_array
        row, col = np.array(d.ImageOrientationPatient[:3], float), np.array(d.ImageOrientationPatient[3:], float)
        dr, dc = (float(v) for v in d.PixelSpacing)
        for r, cc in rng.integers(0, 512, (40, 2)):
            lps = np.array(d.ImagePositionPatient, float) + cc * dc * row + r * dr * col   # DICOM PS3.3 C.7.6.2.1.1
            ijk = inv @ np.r_[-lps[0], -lps[1], lps[2], 1]                                  # LPS -> RAS, then the affine's inverse
            assert np.allclose(ijk, np.round(ijk), atol=1e-3), ijk
            i, j, k = np.round(ijk[:3]).astype(int)
            assert hu[i, j, k] == px[r, cc] * float(d.RescaleSlope) + float(d.RescaleIntercept)
    assert (hu[:, :, 20:] == -1000).all()


def test_every_layout_and_mask_format(samples, tmp_path):
    hu, seg, aff = small(samples)
    raw = tmp_path/'raw'
    nn = raw/'Dataset001_Small'
    save_nii(nn/'imagesTr'/'a_0000.nii.gz', hu, aff); save_nii(nn/'labelsTr'/'a.nii.gz', seg, aff)                 # 3D label map
    save_nii(nn/'imagesTr'/'b_0000.nii.gz', hu, aff); save_nii(nn/'labelsTr'/'b.nii.gz', seg[..., None], aff)      # 1-channel 4D
    save_nii(nn/'imagesTr'/'b_0001.nii.gz', hu, aff)                                                               # a second channel: ignored
    onehot = np.stack([seg == 5, seg == 1], axis=-1).astype(np.uint8)                                               # channel-last, disjoint
    save_nii(raw/'plain'/'c_ct.nii.gz', hu, aff); save_nii(raw/'plain'/'c_seg.nii.gz', onehot, aff)
    ts = raw/'TotalSegmentator'/'s0011'          # stored as (z, x, y) with z flipped: reorienting to RAS must undo it
    turn = lambda a: a.transpose(2, 0, 1)[::-1]
    perm = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)       # (k, i, j) -> (i, j, k)
    flip = np.diag([-1., 1, 1, 1]); flip[0, 3] = hu.shape[2] - 1                        # a -> n - 1 - a
    taff = aff @ perm @ flip
    save_nii(ts/'ct.nii.gz', turn(hu), taff)
    for lab in (1, 5, 31):
        save_nii(ts/'segmentations'/f'{TOTALSEG_CLASSES[lab - 1]}.nii.gz', turn(seg == lab).astype(np.uint8), taff)
    save_nii(ts/'segmentations'/'brain.nii.gz', turn(np.zeros_like(seg)), taff)                                    # absent organ: empty file
    m3 = raw/'M3D_Seg'/'0007'
    (m3/'12').mkdir(parents=True)
    (m3/'0007.json').write_text(json.dumps({'name': 'x', 'labels': {'0': 'background', '1': 'liver', '2': 'liver and spleen'}}))
    np.save(m3/'12'/'image.npy', hu[None].astype(np.float32))
    multi = np.stack([seg == 5, (seg == 5) | (seg == 1)]).astype(np.uint8)                                          # overlapping channels
    sparse.save_npz(m3/'12'/f'mask_{multi.shape}.npz', sparse.csr_matrix(multi.reshape(2, -1)))
    shutil.copytree(samples/'ct'/'dicom_small', raw/'dicom'/'patient1')
    p = run_medvox('ct', 'preprocess', raw, tmp_path/'out', TOTALSEG_MAP, '1', '--default_resolution', '64', check=0)
    assert '6 cases processed' in p.stdout and '5/5 datasets complete' in p.stdout, p.stdout
    out = tmp_path/'out'
    assert sorted(str(c.relative_to(out)) for c in find_cases(out)) == [
        'Dataset001_Small/processed/a', 'Dataset001_Small/processed/b', 'M3D_Seg_0007/processed/12',
        'TotalSegmentator/processed/s0011', 'dicom/processed/patient1', 'plain/processed/c_ct']
    labels = sorted(int(x) for x in np.unique(seg) if x)
    pad = lambda m: pad_end(m.astype(np.uint8), 64, 0)
    for case in ('a', 'b'):
        c = load_case(out/'Dataset001_Small'/'processed'/case)
        assert sorted(int(k) for k in c['masks']) == labels
        for k in (1, 5, 31, 117): assert np.array_equal(load_volume(c['masks'][str(k)]), pad(seg == k)), (case, k)
        assert c['organ_labels']['label_to_name']['5'] == 'liver' and c['organ_labels']['organs']['31']['window'] == 'bone'
        lw = load_volume(c['organ_windows']['liver']['soft_tissue'])
        assert np.array_equal(lw, pad((seg == 5) & (hu >= -150) & (hu <= 250)))                     # organ mask ∧ its window
    assert load_case(out/'Dataset001_Small'/'processed'/'b')['organ_labels']['mask_type'] == 'single_channel_4d'
    c = load_case(out/'plain'/'processed'/'c_ct')
    assert c['organ_labels']['mask_type'] == 'one_hot' and c['organ_labels']['label_to_name'] == {'1': 'spleen', '2': 'kidney_right'}
    assert np.array_equal(load_volume(c['masks']['1']), pad(seg == 5))                              # channel 0 -> label 1
    c = load_case(out/'TotalSegmentator'/'processed'/'s0011')
    assert c['organ_labels']['label_to_name'] == {'1': 'spleen', '5': 'liver', '31': 'vertebrae_l1'}
    assert np.array_equal(load_volume(c['masks']['31']), pad(seg == 31)) and np.allclose(c['affine'], aff)   # back in RAS
    a = load_case(out/'Dataset001_Small'/'processed'/'a')
    for name in WINDOWS: assert np.array_equal(load_volume(c['windows'][name]), load_volume(a['windows'][name])), name
    to_src = np.asarray(c['info']['to_source_index'])
    assert np.allclose(to_src @ [4, 7, 9, 1], [hu.shape[2] - 1 - 9, 4, 7, 1])           # stored (i, j, k) is source (n-1-k, i, j)
    c = load_case(out/'M3D_Seg_0007'/'processed'/'12')
    assert c['organ_labels']['mask_type'] == 'multi_channel' and sorted(c['masks']) == ['0_liver', '1_liver_and_spleen']
    assert np.array_equal(load_volume(c['masks']['1_liver_and_spleen']), pad((seg == 5) | (seg == 1)))
    assert c['info']['affine_space'] == 'voxel' and np.array_equal(c['affine'], np.eye(4))
    c = load_case(out/'dicom'/'processed'/'patient1')
    assert c['info']['original_shape'] == [64, 64, 4] and np.allclose(c['info']['spacing'], [7.8125, 7.8125, 12.0])


def test_sigkill_then_resume_equals_uninterrupted(samples, tmp_path):
    nnunet_dataset(tmp_path/'raw'/'Dataset002_Kill', samples, n=5)
    args = ['ct', 'preprocess', tmp_path/'raw']
    run_medvox(*args, tmp_path/'ref', check=0)
    killed = tmp_path/'killed'
    proc = subprocess.Popen([str(MEDVOX), *map(str, args), str(killed)], env=dict(os.environ, MEDVOX_PROGRESS='0'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = lambda: [p for p in (killed/'Dataset002_Kill'/'processed').glob('*/info.json') if not p.parent.name.startswith('.')]
    deadline = time.time() + 120
    while time.time() < deadline and not done(): time.sleep(0.005)
    proc.send_signal(signal.SIGKILL); proc.wait()
    n_done = len(done())
    assert 1 <= n_done < 5 and not (killed/'Dataset002_Kill'/'metadata.csv').exists(), n_done   # really killed mid-run
    for p in done(): load_case(p.parent)                                                          # every visible case is complete
    p = run_medvox(*args, killed, check=0)
    assert f'{5 - n_done} cases processed, {n_done} kept' in p.stdout, p.stdout
    assert snapshot(killed) == snapshot(tmp_path/'ref')
    assert not [q for q in (killed/'Dataset002_Kill'/'processed').iterdir() if q.name.startswith('.')]   # no temporary folder left


def test_bad_cases_are_skipped_with_their_reason(samples, tmp_path):
    hu, seg, aff = small(samples)
    d = tmp_path/'raw'/'Dataset003_Bad'
    save_nii(d/'imagesTr'/'good_0000.nii.gz', hu, aff); save_nii(d/'labelsTr'/'good.nii.gz', seg, aff)
    gz = save_nii(d/'imagesTr'/'trunc_0000.nii.gz', hu, aff).read_bytes()
    (d/'imagesTr'/'trunc_0000.nii.gz').write_bytes(gz[:len(gz) // 2]); save_nii(d/'labelsTr'/'trunc.nii.gz', seg, aff)
    save_nii(d/'imagesTr'/'short_0000.nii.gz', hu, aff); save_nii(d/'labelsTr'/'short.nii.gz', seg[:, :, :20], aff)
    save_nii(d/'imagesTr'/'notct_0000.nii.gz', ((hu + 1024) / 4000).astype(np.float32), aff); save_nii(d/'labelsTr'/'notct.nii.gz', seg, aff)
    save_nii(d/'imagesTr'/'nolabel_0000.nii.gz', hu, aff)
    save_nii(d/'imagesTr'/'empty_0000.nii.gz', hu, aff); save_nii(d/'labelsTr'/'empty.nii.gz', np.zeros_like(seg), aff)
    save_nii(tmp_path/'raw'/'huge'/'long.nii.gz', np.full((1100, 2, 2), -1000, np.int16), np.eye(4))
    for attempt in (1, 2):
        p = run_medvox('ct', 'preprocess', tmp_path/'raw', tmp_path/'out', '--default_resolution', '64')
        assert p.returncode == 2, p.stderr
        lines = [l for l in p.stderr.splitlines() if l.startswith('skipped:')]
        reasons = {case: next(l for l in lines if f'/{case}:' in l or f'/{case}_0000' in l) for case in
                   ('trunc', 'short', 'notct', 'nolabel', 'empty', 'long')}
        assert len(lines) == 6, p.stderr
        assert 'cannot read CT NIfTI' in reasons['trunc']
        assert 'mask shape (61, 51, 20) does not match CT shape (61, 51, 30)' in reasons['short']
        assert 'do not look like CT Hounsfield units' in reasons['notct']
        assert 'no label file labelsTr/nolabel.nii.gz' in reasons['nolabel']
        assert 'only background' in reasons['empty']
        assert 'never downsamples' in reasons['long']
        assert ('1 cases processed, 0 kept' if attempt == 1 else '0 cases processed, 1 kept') in p.stdout
    failed = json.loads((tmp_path/'out'/'Dataset003_Bad'/'failed_cases.json').read_text())
    assert failed['total_failed'] == 5 and sorted(f['case_id'] for f in failed['failed_cases']) == ['empty', 'nolabel', 'notct', 'short', 'trunc']
    rows = list(csv.DictReader(open(tmp_path/'out'/'Dataset003_Bad'/'metadata.csv')))
    assert [r['case_id'] for r in rows] == ['good']
    assert json.loads((tmp_path/'out'/'Dataset003_Bad'/'dataset_config.json').read_text())['num_skipped'] == 5


def test_shards_then_workers_equal_one_sequential_run(samples, tmp_path):
    nnunet_dataset(tmp_path/'raw'/'Dataset004_Shards', samples, n=4, with_labels=False)
    base = ['ct', 'preprocess', tmp_path/'raw']
    run_medvox(*base, '--output_dir', tmp_path/'seq', check=0)
    p0 = run_medvox(*base, '--output_dir', tmp_path/'sharded', '--shard', '0/2', check=0)
    assert '2 cases processed' in p0.stdout and '0/1 datasets complete' in p0.stdout
    assert not (tmp_path/'sharded'/'Dataset004_Shards'/'metadata.csv').exists()
    p1 = run_medvox(*base, '--output_dir', tmp_path/'sharded', '--shard', '1/2', check=0)
    assert '2 cases processed' in p1.stdout and '1/1 datasets complete' in p1.stdout
    assert snapshot(tmp_path/'sharded') == snapshot(tmp_path/'seq')
    run_medvox(*base, '--output_dir', tmp_path/'workers', '--num_workers', '2', check=0)
    assert snapshot(tmp_path/'workers') == snapshot(tmp_path/'seq')


def test_compute_sdf_uses_the_sdf_stage_or_says_it_is_missing(samples, tmp_path):
    raw = tmp_path/'raw'; raw.mkdir()
    shutil.copy(samples/'ct'/'ct_small.nii.gz', raw/'a_ct.nii.gz')
    hu, seg, aff = small(samples)
    save_nii(raw/'a_seg.nii.gz', np.where(np.isin(seg, (5, 1)), seg, 0).astype(np.uint8), aff)
    p = run_medvox('ct', 'preprocess', raw, tmp_path/'out', '--default_resolution', '64', '--compute_sdf', '--replace_npy',
                   '--sdf_resolution', '64', '--sdf_targets', 'masks')
    try: _sdf_module()
    except DependencyError as e:                                                       # the SDF stage or its kernel is not built
        assert p.returncode == 2 and '--compute_sdf needs' in p.stderr and str(e) in p.stderr, p.stderr
        assert not (tmp_path/'out'/'raw').exists()
        return
    assert p.returncode == 0, p.stderr
    c = load_case(tmp_path/'out'/'raw'/'processed'/'a_ct')
    assert sorted(c['mask_sdfs']) == ['1', '5'] and c['masks'] == {}                   # --replace_npy removed the binaries
    liver = pad_end((seg == 5).astype(np.uint8), 64, 0)
    with np.load(c['mask_sdfs']['5']) as z:
        sdf, idx = z['sparse_sdf'][:, 0], z['sparse_index']
        assert z['sparse_sdf'].dtype == np.float32 and z['sparse_sdf'].shape[1] == 1 and idx.shape[1] == 3 and int(z['resolution']) == 64
        assert np.allclose(z['grid_to_world'], c['affine'])                  # grid point = voxel of the padded grid, in patient mm
        inside, outside = liver[tuple(idx[sdf < -0.2].T)], liver[tuple(idx[sdf > 0.2].T)]
        assert len(inside) > 100 and inside.all() and len(outside) > 100 and not outside.any()   # negative inside the organ
    assert c['info']['organs_present'][1]['sdf_points'] == len(idx)


def test_positional_form_config_errors_and_help(samples, tmp_path):
    raw = tmp_path/'raw'; raw.mkdir()
    shutil.copy(samples/'ct'/'ct_small.nii.gz', raw/'a_ct.nii.gz'); shutil.copy(samples/'ct'/'ct_small_seg.nii.gz', raw/'a_seg.nii.gz')
    p = run_medvox('ct', 'preprocess', raw, tmp_path/'out', TOTALSEG_MAP, '1', '5', '--default_resolution', '64', '--window-format', 'npy', check=0)
    c = load_case(tmp_path/'out'/'raw'/'processed'/'a_ct')
    assert c['organ_labels']['label_to_name']['5'] == 'liver' and c['windows']['lung'].name == 'lung_w1500_l-600.npy'
    assert c['masks']['5'].name == '5_binary.npy' and c['organ_windows']['liver']['soft_tissue'].name == 'soft_tissue_w400_l50.npy'
    bad = [(['--windows', 'lung', 'abdomen'], "'abdomen' is not a window"), (['--shard', '2/2'], '0 <= i < n'),
           (['--organ_labels', tmp_path/'nope.json'], 'organ map file does not exist')]
    for extra, msg in bad:
        p = run_medvox('ct', 'preprocess', raw, tmp_path/'out2', *extra)
        assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, (extra, p.stderr)
    p = run_medvox('ct', 'preprocess', tmp_path/'empty_dir_missing', tmp_path/'out3')
    assert p.returncode == 2 and 'data root is not a directory' in p.stderr
    h = run_medvox('ct', 'preprocess', '--help', check=0).stdout
    for flag in ('--data_root', '--organ_labels', '--default_resolution', '--num_workers', '--max_depth', '--max_cases', '--compute_sdf',
                 '--sdf_resolution', '--sdf_threshold_factor', '--replace_npy', '--use_mask', '--no_skip', '--window-format', '--air-hu', '--shard'):
        assert flag in h, flag


def test_reads_a_dataset_written_by_the_seeds_scripts(tmp_path):
    "The seeds' layout (dense .npy, their info.json keys, no affine) is read by the same functions."
    case = tmp_path/'processed_dataset'/'ds'/'processed'/'case_001'
    (case/'windows').mkdir(parents=True); (case/'masks').mkdir()
    lung = (np.random.default_rng(0).random((16, 16, 16)) > 0.5).astype(np.uint8)
    np.save(case/'windows'/'lung_w1500_l-600.npy', lung)
    np.save(case/'ct_original_16.npy', np.full((16, 16, 16), -1000, np.int16))
    np.save(case/'masks'/'5_binary.npy', lung[::-1].copy())
    np.savez_compressed(case/'windows'/'lung_w1500_l-600.npz', sparse_sdf=np.zeros((3, 1), np.float32),
                        sparse_index=np.zeros((3, 3), np.int32), resolution=16)
    (case/'info.json').write_text(json.dumps({'case_id': 'case_001', 'original_shape': [16, 16, 16], 'adapted_shape': [16, 16, 16],
                                              'resolution': 16, 'windows_processed': ['lung']}))
    assert find_cases(tmp_path/'processed_dataset') == [case]
    c = load_case(case)
    assert c['affine'] is None and c['resolution'] == 16 and c['ct'].name == 'ct_original_16.npy'
    assert np.array_equal(load_volume(c['windows']['lung']), lung) and np.array_equal(load_volume(c['masks']['5']), lung[::-1])
    assert c['window_sdfs']['lung'].name == 'lung_w1500_l-600.npz'
    assert volume_info(case/'windows'/'lung_w1500_l-600')['shape'] == [16, 16, 16]


def test_an_axis_longer_than_512_pads_to_1024(tmp_path):
    hu = np.full((600, 3, 2), -1000, np.int16)
    hu[100:200] = 40                                                     # soft tissue in the middle of a long, thin scan
    save_nii(tmp_path/'raw'/'long_ct.nii.gz', hu, np.diag([0.8, 1., 1., 1.]))
    run_medvox('ct', 'preprocess', tmp_path/'raw', tmp_path/'out', check=0)
    c = load_case(tmp_path/'out'/'raw'/'processed'/'long_ct')
    assert c['resolution'] == 1024 and c['info']['pad_after'] == [424, 1021, 1022]
    st = volume_info(c['windows']['soft_tissue'])
    assert st['shape'] == [1024] * 3 and st['block_shape'] == [600, 3, 2] and st['fill'] == 0 and st['offset'] == [0, 0, 0]
    assert volume_info(c['windows']['lung'])['fill'] == 1 and volume_info(c['ct'])['shape'] == [1024] * 3
