"Prerender store: the seed's CLI on real data, SIGKILL + resume, source fingerprints, malformed inputs, shards, verify, file-system failures."
import os, shutil, signal, subprocess, sys, time
from pathlib import Path
import h5py, numpy as np, pytest, torch, yaml
from conftest import MEDVOX, run_medvox
from fs_faults import medvox_here


@pytest.fixture
def mv(capsys):
    "`medvox` in this process (torch imported once per session; see fs_faults.medvox_here)."
    return lambda *args, check=None: medvox_here(capsys, *args, check=check)

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

def test_seed_flags_on_real_csvs(shared_data, tmp_path, mv):
    out = tmp_path/'pre'
    p = mv('prerender', '--input-h5', shared_data/'smlm', '--output-dir', out, '--voxel-size', '32',
                   '--batch-size', '1', *SEED_FLAGS, check=0)
    meta = yaml.safe_load((out/'metadata.yaml').read_text())
    assert meta['n_samples'] == 2 and meta['grid_shape'] == [32, 32, 32] and meta['n_skipped'] == 0
    files = meta['source']['files']
    assert len(files) == 2 and all(len(s['sha256']) == 64 and s['bytes'] > 0 for s in files) and meta['source']['n_source_samples'] == 2
    assert meta['voxelization']['volume_dims'] == [28000.0, 28000.0, 1600.0]
    assert (out/'config.yaml').exists()
    with h5py.File(out/'voxels_batch_0000.h5') as f:
        v = f['voxels']
        assert v.shape == (1, 32, 32, 32) and v.chunks == (1, 32, 32, 32) and v.compression == 'gzip'
        assert np.isfinite(v[:]).all() and v[:].max() > 0
        aff = f['affines'][0]
    assert np.allclose(np.diag(aff)[:3], [28000 / 32, 28000 / 32, 1600 / 32])
    assert 'ok, 2 samples' in mv('prerender', '--verify', out, check=0).stdout

def test_sigkill_then_resume_equals_uninterrupted(tmp_path, mv):
    src = make_clouds(tmp_path/'clouds.h5')
    args = ['prerender', '--input-h5', src, '--voxel-size', '96', '--batch-size', '2', '--sigma', '1.5']
    mv(*args, '--output-dir', tmp_path/'ref', check=0)
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

def test_malformed_inputs_reported_and_skipped(shared_data, tmp_path, mv):
    d = tmp_path/'in'; d.mkdir()
    good = (shared_data/'smlm'/'CaulobacterC_2_R09_MoernerLab.csv').read_text().splitlines()
    (d/'a_good.csv').write_text('\n'.join(good) + '\n')
    (d/'b_nan.csv').write_text('\n'.join(good[:2000] + ['nan,1,2', '3,inf,4']) + '\n')
    (d/'c_empty.csv').write_text('x,y,z\n')
    (d/'d_nocoords.csv').write_text('frame,photons\n1,200\n2,300\n')
    (d/'e_outside.csv').write_text('x,y,z\n-1e9,0,0\n1e9,0,0\n')   # centred box: both points outside
    p = mv('prerender', '--input-h5', d, '--output-dir', tmp_path/'pre', '--voxel-size', '32', '--batch-size', '2',
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
def test_absurd_parameters_one_line_exit_2(samples, tmp_path, args, msg, mv):
    p = mv('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', tmp_path/'o', *args)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr

def test_missing_and_foreign_inputs(tmp_path, mv):
    p = mv('prerender', '--input-h5', tmp_path/'nope.h5', '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and 'nope.h5' in p.stderr and 'Traceback' not in p.stderr
    (tmp_path/'foreign.h5').write_bytes(b'\x89HDF\r\n\x1a\n' + b'\0' * 100)
    p = mv('prerender', '--input-h5', tmp_path/'foreign.h5', '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and 'foreign.h5' in p.stderr
    assert not (tmp_path/'o').exists()                                            # nothing written for a bad input
    p = mv('prerender', '--verify', tmp_path/'o')
    assert p.returncode == 2 and 'does not exist' in p.stderr
    (tmp_path/'o').mkdir()
    p = mv('prerender', '--verify', tmp_path/'o')
    assert p.returncode == 2 and 'metadata file does not exist' in p.stderr

def test_shards_make_the_same_store(samples, tmp_path, mv):
    args = ['prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--voxel-size', '32', '--batch-size', '2']
    mv(*args, '--output-dir', tmp_path/'one', check=0)
    p0 = mv(*args, '--output-dir', tmp_path/'sh', '--shard', '0/2', check=0)
    assert 'not complete' in p0.stdout and not (tmp_path/'sh'/'metadata.yaml').exists()
    mv(*args, '--output-dir', tmp_path/'sh', '--shard', '1/2', check=0)
    a, b = voxels_by_batch(tmp_path/'one'), voxels_by_batch(tmp_path/'sh')
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    mv('prerender', '--verify', tmp_path/'sh', check=0)

def test_verify_detects_corruption(samples, tmp_path, mv):
    "The corrupt file is read in a separate process: a crash there must not take the test session with it."
    out = tmp_path/'pre'
    mv('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', out, '--voxel-size', '32', '--batch-size', '4', check=0)
    f = out/'voxels_batch_0001.h5'
    b = bytearray(f.read_bytes()); b[len(b) // 2] ^= 0xFF; f.write_bytes(bytes(b))
    p = run_medvox('prerender', '--verify', out)
    assert p.returncode == 2 and 'voxels_batch_0001.h5' in p.stderr
    f.unlink()
    p = run_medvox('prerender', '--verify', out)
    assert p.returncode == 2 and 'missing' in p.stderr

def test_num_workers_give_the_same_store(samples, tmp_path, mv):
    args = ['prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--voxel-size', '32', '--batch-size', '3']
    mv(*args, '--output-dir', tmp_path/'w0', check=0)
    mv(*args, '--output-dir', tmp_path/'w2', '--num-workers', '2', check=0)
    a, b = voxels_by_batch(tmp_path/'w0'), voxels_by_batch(tmp_path/'w2')
    assert sorted(a) == sorted(b) and len(a) == 4 and all(a[k].tobytes() == b[k].tobytes() for k in a)


def csv_folder(samples, d):
    "A folder of two real SMLM CSV excerpts (ThunderSTORM and vLUME dialects)."
    d.mkdir()
    for n in ('thunderstorm_excerpt.csv', 'vlume_excerpt.csv'): shutil.copy(samples/'smlm'/n, d)
    return d


def test_rerun_against_another_source_is_refused(samples, tmp_path, mv):
    "Regression: a rerun with the same parameters but another source kept batch 0 of the first source and said ok."
    store, h5 = tmp_path/'D', samples/'smlm'/'smlm_samples.h5'
    args = ['--output-dir', store, '--voxel-size', '64', '--volume-dims', '28000', '28000', '1600', '--batch-size', '4']
    mv('prerender', '--input-h5', csv_folder(samples, tmp_path/'csvs'), *args, check=0)
    before = voxels_by_batch(store)
    p = mv('prerender', '--input-h5', h5, *args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert '{thunderstorm_excerpt.csv, vlume_excerpt.csv} (2 samples' in p.stderr and f'{h5.resolve()} (10 samples' in p.stderr, p.stderr
    after = voxels_by_batch(store)                                                 # the store is untouched
    assert sorted(after) == sorted(before) and all(after[k].tobytes() == before[k].tobytes() for k in before)
    assert 'ok, 2 samples' in mv('prerender', '--verify', store, check=0).stdout
    p = mv('prerender', '--input-h5', h5, *args, '--overwrite', check=0)
    assert '10 samples stored (3 batches written, 0 kept)' in p.stdout
    meta = yaml.safe_load((store/'metadata.yaml').read_text())
    assert [f['path'] for f in meta['source']['files']] == [str(h5.resolve())]
    with h5py.File(store/'voxels_batch_0000.h5') as f:
        assert f['indices'][:].tolist() == [0, 1, 2, 3] and f['names'].asstr()[0] == 'smlm_samples.h5#0'
    # a rerun of the same source keeps everything; a shard of another source is refused as well
    assert '0 batches written, 3 kept' in mv('prerender', '--input-h5', h5, *args, check=0).stdout
    p = mv('prerender', '--input-h5', tmp_path/'csvs', *args, '--shard', '1/2')
    assert p.returncode == 2 and 'holds voxels of' in p.stderr


def test_pixel_size_is_part_of_the_source(samples, tmp_path, mv):
    "The same Picasso file read with another pixel size is other data: a rerun is refused."
    args = ['prerender', '--input-h5', samples/'smlm'/'picasso_excerpt.hdf5', '--output-dir', tmp_path/'D', '--voxel-size', '16']
    mv(*args, '--pixel-size', '130', check=0)
    p = mv(*args, '--pixel-size', '100')
    assert p.returncode == 2 and 'holds voxels of' in p.stderr, p.stderr


def test_verify_rejects_a_batch_of_another_store(samples, tmp_path, mv):
    "A batch with the right name, number and parameters but made from another source fails --verify, checksum or not."
    args = ['--voxel-size', '32', '--batch-size', '4']
    a, b = tmp_path/'A', tmp_path/'B'
    mv('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', a, *args, check=0)
    mv('prerender', '--input-h5', csv_folder(samples, tmp_path/'csvs'), '--output-dir', b, *args, check=0)
    shutil.copy(b/'voxels_batch_0000.h5', a/'voxels_batch_0000.h5')
    p = mv('prerender', '--verify', a)
    assert p.returncode == 2 and 'voxels_batch_0000.h5: batch was made from' in p.stderr and 'the store from' in p.stderr, p.stderr
    meta = yaml.safe_load((a/'metadata.yaml').read_text())                   # even with the checksum made to match
    from medvox_nb.core import sha256_file
    meta['batch_checksums']['voxels_batch_0000.h5'] = sha256_file(a/'voxels_batch_0000.h5')
    (a/'metadata.yaml').write_text(yaml.safe_dump(meta, sort_keys=False))
    p = mv('prerender', '--verify', a)
    assert p.returncode == 2 and 'batch was made from' in p.stderr, p.stderr
    # a batch file lying beside the listed ones is reported too
    mv('prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', a, *args, '--overwrite', check=0)
    shutil.copy(a/'voxels_batch_0002.h5', a/'voxels_batch_0007.h5')
    p = mv('prerender', '--verify', a)
    assert p.returncode == 2 and 'not listed in metadata: voxels_batch_0007.h5' in p.stderr, p.stderr


def test_help_generated_from_the_config_sections(mv):
    from dataclasses import fields
    from medvox_nb.prerender import PrerenderConfig
    from medvox_nb.voxelize import VoxelizeConfig
    out = ' '.join(mv('prerender', '--help', check=0).stdout.split())
    for f in [*fields(VoxelizeConfig), *fields(PrerenderConfig)]:
        assert f'--{f.name.replace("_", "-")}' in out, f.name
    assert '--compression {gzip,lzf,none,blosc,zstd}' in out and '(default: 100)' in out


# --- file-system failures: one line naming the path, exit 2

def test_output_dir_is_a_file_or_under_a_file(samples, tmp_path, capsys):
    from fs_faults import run_main, assert_one_line
    (tmp_path/'afile').write_text('x')
    args = ['--input-h5', samples/'smlm'/'smlm_samples.h5', '--voxel-size', '16']
    assert_one_line(*run_main(capsys, 'prerender', *args, '--output-dir', tmp_path/'afile'), tmp_path/'afile', 'is a file, not a folder')
    assert_one_line(*run_main(capsys, 'prerender', *args, '--output-dir', tmp_path/'afile'/'D'), tmp_path/'afile'/'D', 'a parent of this path is a file')
    assert (tmp_path/'afile').read_text() == 'x'


@pytest.mark.parametrize('err,words', [(13, 'permission denied'), (30, 'read-only'), (28, 'no space left')])
def test_injected_fs_errors(samples, tmp_path, capsys, monkeypatch, err, words):
    from fs_faults import run_main, assert_one_line, inject
    inject(monkeypatch, tmp_path/'out', err)
    assert_one_line(*run_main(capsys, 'prerender', '--input-h5', samples/'smlm'/'smlm_samples.h5', '--output-dir', tmp_path/'out'/'D',
                              '--voxel-size', '16', '--batch-size', '4'), tmp_path/'out'/'D', words)
    monkeypatch.undo()
    assert not (tmp_path/'out'/'D').exists() or not [p for p in (tmp_path/'out'/'D').iterdir() if p.name.startswith('.')]


def test_real_read_only_and_full_disk(samples, tmp_path, capsys):
    "A read-only bind mount and a full tmpfs: one line, exit 2, no crash (HDF5 2.0 segfaulted at exit after a failed write)."
    from fs_faults import run_main, assert_one_line, read_only_dir, full_dir
    args = ['--input-h5', samples/'smlm'/'smlm_samples.h5', '--voxel-size', '64', '--batch-size', '4']
    with read_only_dir(tmp_path/'ro') as ro:
        assert_one_line(*run_main(capsys, 'prerender', *args, '--output-dir', ro/'D'), ro/'D', 'read-only')
    with full_dir(tmp_path/'full', '40k') as full:   # in a separate process: a crash at exit must show as a non-2 status
        p = run_medvox('prerender', *args, '--output-dir', full/'D')
        assert_one_line(p.returncode, p.stderr, full/'D'/'voxels_batch_0000.h5', 'no space left')
        assert [q.name for q in (full/'D').iterdir()] == []
