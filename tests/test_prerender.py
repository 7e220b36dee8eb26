"Prerender store: the seed's CLI on real data, SIGKILL + resume, malformed inputs, shards, verify, datasets, NIfTI."
import os, signal, subprocess, sys, time
from pathlib import Path
import h5py, numpy as np, pytest, torch, yaml
from conftest import MEDVOX, run_medvox

SEED_FLAGS = ['--voxelization-method', 'gaussian', '--sigma', '1.0', '--volume-dims', '28000', '28000', '1600',
              '--padding', '0', '0', '0', '--threshold', '0.001', '--precision', '10', '--compression', 'gzip']

def voxels_by_batch(store):
    return {p.name: h5py.File(p)['voxels'][:] for p in sorted(Path(store).glob('voxels_batch_*.h5'))}

def make_clouds(path, n=24, points=60000, seed=0):
    "A ragged multi-sample file of realistic clustered SMLM-like clouds (nm)."
    from medvox_nb.pointcloud import write_ragged_h5
    rng = np.random.default_rng(seed)
    clouds = []
    for _ in range(n):
        centres = rng.uniform([0, 0, -700], [28000, 28000, 700], (40, 3))
        pts = centres[rng.integers(0, 40, points)] + rng.normal(0, [150, 150, 60], (points, 3))
        clouds.append(pts.astype(np.float32))
    write_ragged_h5(path, clouds)
    return path

def test_seed_flags_on_real_csvs(shared_data, tmp_path):
    out = tmp_path/'pre'
    p = run_medvox('prerender', '--input-h5', shared_data/'smlm', '--output-dir', out, '--voxel-size', '32',
                   '--batch-size', '1', *SEED_FLAGS, check=0)
    meta = yaml.safe_load((out/'metadata.yaml').read_text())
    assert meta['n_samples'] == 2 and meta['grid_shape'] == [32, 32, 32] and meta['n_skipped'] == 0
    assert len(meta['sources']) == 2 and all(len(s['sha256']) == 64 for s in meta['sources'])
    assert meta['voxelization']['volume_dims'] == [28000.0, 28000.0, 1600.0]
    assert (out/'config.yaml').exists()
    with h5py.File(out/'voxels_batch_0000.h5') as f:
        v = f['voxels']
        assert v.shape == (1, 32, 32, 32) and v.chunks == (1, 32, 32, 32) and v.compression == 'gzip'
        assert np.isfinite(v[:]).all() and v[:].max() > 0
        aff = f['affines'][0]
    assert np.allclose(np.diag(aff)[:3], [28000 / 32, 28000 / 32, 1600 / 32])
    assert 'ok, 2 samples' in run_medvox('prerender', '--verify', out, check=0).stdout

def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    src = make_clouds(tmp_path/'clouds.h5')
    args = ['prerender', '--input-h5', src, '--voxel-size', '96', '--batch-size', '2', '--sigma', '1.5']
    run_medvox(*args, '--output-dir', tmp_path/'ref', check=0)
    killed = tmp_path/'killed'
    env = dict(os.environ, MEDVOX_PROGRESS='0')
    proc = subprocess.Popen([str(MEDVOX), *map(str, args), '--output-dir', str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(killed.glob('voxels_batch_*.h5')): time.sleep(0.01)
    proc.send_signal(signal.SIGKILL); proc.wait()
    done = sorted(p.name for p in killed.glob('voxels_batch_*.h5'))
    assert 1 <= len(done) < 12 and not (killed/'metadata.yaml').exists(), done  # really killed mid-run
    for p in killed.glob('voxels_batch_*.h5'): h5py.File(p).close()               # every visible batch is complete
    p = run_medvox(*args, '--output-dir', killed, check=0)
    assert f'{len(done)} kept' in p.stdout
    ref, res = voxels_by_batch(tmp_path/'ref'), voxels_by_batch(killed)
    assert sorted(ref) == sorted(res)
    for k in ref: assert ref[k].tobytes() == res[k].tobytes(), k
    assert not [q for q in killed.iterdir() if q.name.startswith('.')]              # no temporary files left

def test_malformed_inputs_reported_and_skipped(shared_data, tmp_path):
    d = tmp_path/'in'; d.mkdir()
    good = (shared_data/'smlm'/'CaulobacterC_2_R09_MoernerLab.csv').read_text().splitlines()
    (d/'a_good.csv').write_text('\n'.join(good) + '\n')
    (d/'b_nan.csv').write_text('\n'.join(good[:2000] + ['nan,1,2', '3,inf,4']) + '\n')
    (d/'c_empty.csv').write_text('x,y,z\n')
    (d/'d_nocoords.csv').write_text('frame,photons\n1,200\n2,300\n')
    (d/'e_outside.csv').write_text('x,y,z\n-1e9,0,0\n1e9,0,0\n')   # centred box: both points outside
    p = run_medvox('prerender', '--input-h5', d, '--output-dir', tmp_path/'pre', '--voxel-size', '32', '--batch-size', '2',
                   '--volume-dims', '28000', '28000', '1600')
    assert p.returncode == 2, p.stderr
    err = [l for l in p.stderr.splitlines() if l.startswith('skipped:')]
    assert len(err) == 3 and all(any(f in l for l in err) for f in ('c_empty.csv', 'd_nocoords.csv', 'e_outside.csv')), p.stderr
    meta = yaml.safe_load((tmp_path/'pre'/'metadata.yaml').read_text())
    assert meta['n_samples'] == 2 and meta['n_skipped'] == 3          # the NaN rows are dropped, not the sample
    with h5py.File(tmp_path/'pre'/'voxels_batch_0000.h5') as f: assert f['n_nonfinite'][1] == 2
    assert {s['name'] for s in meta['skipped']} == {'c_empty.csv', 'd_nocoords.csv', 'e_outside.csv'}

@pytest.mark.parametrize('args,msg', [
    (['--voxel-size', '0'], 'voxel_size'), (['--sigma', '-1'], 'sigma'), (['--batch-size', '0'], 'batch_size'),
    (['--set', 'prerender.treshold=0.1'], 'unknown key prerender.treshold'), (['--shard', '3/2'], 'shard'),
    (['--max-samples', '-3'], 'max_samples')])
def test_absurd_parameters_one_line_exit_2(samples, tmp_path, args, msg):
    p = run_medvox('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', tmp_path/'o', *args)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr

def test_missing_and_foreign_inputs(tmp_path):
    p = run_medvox('prerender', '--input-h5', tmp_path/'nope.h5', '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and 'nope.h5' in p.stderr and 'Traceback' not in p.stderr
    (tmp_path/'foreign.h5').write_bytes(b'\x89HDF\r\n\x1a\n' + b'\0' * 100)
    p = run_medvox('prerender', '--input-h5', tmp_path/'foreign.h5', '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and 'foreign.h5' in p.stderr
    assert not (tmp_path/'o').exists()                                            # nothing written for a bad input
    p = run_medvox('prerender', '--verify', tmp_path/'o')
    assert p.returncode == 2 and 'does not exist' in p.stderr
    (tmp_path/'o').mkdir()
    p = run_medvox('prerender', '--verify', tmp_path/'o')
    assert p.returncode == 2 and 'metadata file does not exist' in p.stderr

def test_shards_make_the_same_store(samples, tmp_path):
    args = ['prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--voxel-size', '32', '--batch-size', '2']
    run_medvox(*args, '--output-dir', tmp_path/'one', check=0)
    p0 = run_medvox(*args, '--output-dir', tmp_path/'sh', '--shard', '0/2', check=0)
    assert 'not complete' in p0.stdout and not (tmp_path/'sh'/'metadata.yaml').exists()
    run_medvox(*args, '--output-dir', tmp_path/'sh', '--shard', '1/2', check=0)
    a, b = voxels_by_batch(tmp_path/'one'), voxels_by_batch(tmp_path/'sh')
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    run_medvox('prerender', '--verify', tmp_path/'sh', check=0)

def test_verify_detects_corruption(samples, tmp_path):
    out = tmp_path/'pre'
    run_medvox('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', out, '--voxel-size', '32', '--batch-size', '4', check=0)
    f = out/'voxels_batch_0001.h5'
    b = bytearray(f.read_bytes()); b[len(b) // 2] ^= 0xFF; f.write_bytes(bytes(b))
    p = run_medvox('prerender', '--verify', out)
    assert p.returncode == 2 and 'voxels_batch_0001.h5' in p.stderr
    f.unlink()
    p = run_medvox('prerender', '--verify', out)
    assert p.returncode == 2 and 'missing' in p.stderr

def test_dataset_two_workers_and_on_the_fly(shared_data, tmp_path):
    from medvox_nb.prerender import DataConfig, PrerenderConfig, prerender
    from medvox_nb.dataset import make_dataset
    data = DataConfig(input_h5=str(shared_data/'smlm'), voxel_size=48, sigma=1.0)
    prerender(data, PrerenderConfig(batch_size=1, threshold=0.0), tmp_path/'s')
    pre = make_dataset(DataConfig(use_prerendered=True, prerendered_dir=str(tmp_path/'s')))
    fly = make_dataset(data)
    one = list(torch.utils.data.DataLoader(pre, batch_size=1, num_workers=0))
    two = list(torch.utils.data.DataLoader(pre, batch_size=1, num_workers=2))
    assert [int(i) for _, i in one] == [int(i) for _, i in two] == [0, 1]
    for (a, _), (b, _) in zip(one, two): assert torch.equal(a, b)
    for k in range(2): assert torch.allclose(pre[k][0], fly[k][0], atol=1e-6)
    assert one[0][0].shape == (1, 1, 48, 48, 48)

def test_to_nifti_cli(samples, tmp_path):
    import nibabel as nib
    run_medvox('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', tmp_path/'pre', '--voxel-size', '32', check=0)
    p = run_medvox('to-nifti', '--prerendered-dir', tmp_path/'pre', '-o', tmp_path/'nii', '--val-fraction', '0.25', check=0)
    tr, va = sorted((tmp_path/'nii'/'train').glob('*.nii.gz')), sorted((tmp_path/'nii'/'val').glob('*.nii.gz'))
    assert len(tr) >= 1 and len(va) >= 1
    img = nib.load(tr[0])
    with h5py.File(tmp_path/'pre'/'voxels_batch_0000.h5') as f: aff = f['affines'][0]
    assert img.shape == (32, 32, 32) and np.allclose(np.diag(img.affine)[:3], np.diag(aff)[:3] / 1e6)
    assert img.header.get_xyzt_units()[0] == 'mm'

def test_to_nifti_on_the_fly_matches_the_store(samples, tmp_path):
    import nibabel as nib
    src = samples/'smlm'/'smlm_samples.h5'
    run_medvox('prerender', '--input-h5', src, '--output-dir', tmp_path/'pre', '--voxel-size', '24', '--threshold', '0', check=0)
    run_medvox('to-nifti', '--prerendered-dir', tmp_path/'pre', '-o', tmp_path/'a', '--set', 'data.voxel_size=24', check=0)
    run_medvox('to-nifti', '--input-h5', src, '-o', tmp_path/'b', '--set', 'data.voxel_size=24', check=0)
    fa, fb = sorted((tmp_path/'a').rglob('*.nii.gz')), sorted((tmp_path/'b').rglob('*.nii.gz'))
    assert [f.relative_to(tmp_path/'a') for f in fa] == [f.relative_to(tmp_path/'b') for f in fb] and len(fa) == 10
    for x, y in zip(fa, fb):
        a, b = nib.load(x), nib.load(y)
        assert np.allclose(a.affine, b.affine) and np.allclose(a.get_fdata(), b.get_fdata(), atol=1e-5 * b.get_fdata().max())

def test_num_workers_give_the_same_store(samples, tmp_path):
    args = ['prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--voxel-size', '32', '--batch-size', '3']
    run_medvox(*args, '--output-dir', tmp_path/'w0', check=0)
    run_medvox(*args, '--output-dir', tmp_path/'w2', '--num-workers', '2', check=0)
    a, b = voxels_by_batch(tmp_path/'w0'), voxels_by_batch(tmp_path/'w2')
    assert sorted(a) == sorted(b) and len(a) == 4 and all(a[k].tobytes() == b[k].tobytes() for k in a)
