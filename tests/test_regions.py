"""CLI tests of `medvox pointcloud regions|simulate` (medvox_nb.ldm.regions) on the real SMLM acquisitions.
The end-to-end, exit-code and SIGKILL tests run the installed command; the others call the same entry point
(`medvox_nb.core.main`) in this process, which saves the few seconds each new process spends importing."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import h5py
import numpy as np
import pytest
from conftest import MEDVOX, run_medvox
from medvox_nb.core import main


@pytest.fixture
def cli(capsys):
    "Run `medvox ARGS` in this process: returns (exit code, stdout, stderr)."
    def run(*args, check=None):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        if check is not None: assert rc == check, f'medvox {args} -> {rc}\n{out}\n{err}'
        return rc, out, err
    return run

TS, CB = 'ThunderSTORM_TS3D.csv', 'CaulobacterC_2_R09_MoernerLab.csv'
REGION = ['--region-size', '8000', '8000', '300']


def read_regions(path):
    "(data, names, attrs) of a regions file in the seeds' dense layout."
    with h5py.File(path, 'r') as f:
        return f['data'][()], [n.decode() if isinstance(n, bytes) else n for n in f['names'][()]], dict(f.attrs)


def test_regions_from_real_csvs_prerender(shared_data, tmp_path):
    "Regions of the two real acquisitions: the seeds' layout, in the box frame, voxelized by `medvox prerender` with nothing dropped."
    smlm = shared_data/'smlm'
    out = tmp_path/'regions.h5'
    p = run_medvox('pointcloud', 'regions', smlm/TS, smlm/CB, '-o', out, *REGION, '--num-regions', '3',
                   '--min-points', '1000', '--target-points', '1024', '--random-seed', '5', check=0)
    assert 'wrote' in p.stdout and '6 regions from 2 inputs' in p.stdout, p.stdout
    data, names, attrs = read_regions(out)
    assert data.shape == (6, 1024, 3) and data.dtype == np.float32
    assert [n.split('/')[0] for n in names] == [TS] * 3 + [CB] * 3
    assert (data[..., :2] >= 0).all() and (data[..., :2] < 8000).all()
    assert (data[..., 2] >= -150).all() and (data[..., 2] < 150).all()
    assert np.array_equal(np.round(data.astype(np.float64), 2), data.astype(np.float64).round(2))
    with h5py.File(out) as f:
        assert (f['n_region_points'][()] >= 1000).all()
        srcs = json.loads(f.attrs['sources'])
    assert [s['name'] for s in srcs] == [TS, CB] and all(len(s['sha256']) == 64 for s in srcs)
    # each region maps back onto real localisations of its source (rotation + shift, rounded to 0.01 nm)
    from scipy.spatial import cKDTree
    from medvox_nb.pointcloud import read_points
    from medvox_nb.ldm.regions import rotate_z
    with h5py.File(out) as f: ang, cen, cor = f['angle_deg'][()], f['centre_nm'][()], f['corner_nm'][()]
    for i, src in ((0, TS), (4, CB)):
        back = rotate_z(data[i].astype(np.float64) + cor[i] + [0, 0, 150], -np.radians(ang[i]), cen[i])
        assert cKDTree(read_points(smlm/src)).query(back)[0].max() < 0.01

    store = tmp_path/'store'
    p = run_medvox('prerender', '--input-h5', out, '--output-dir', store, '--voxel-size', '32',
                   '--volume-dims', '8000', '8000', '300', '--batch-size', '4', check=0)
    meta = (store/'metadata.yaml').read_text()
    import yaml
    m = yaml.safe_load(meta)
    assert m['n_samples'] == 6 and m.get('n_skipped', 0) == 0
    from medvox_nb.prerender import verify_store
    assert verify_store(store)['n_samples'] == 6
    from medvox_nb.dataset import PrerenderedVoxelDataset
    ds = PrerenderedVoxelDataset(store)
    vols = np.stack([ds.read(i) for i in range(len(ds))])
    assert vols.shape == (6, 32, 32, 32) and (vols.reshape(6, -1).sum(1) > 0).all()


def test_regions_bad_inputs_skipped(shared_data, tmp_path, cli):
    "A file with too few points for min_points and a foreign file are skipped and recorded; the good file is written; exit 2."
    few = tmp_path/'few.csv'
    few.write_text('x,y,z\n' + ''.join(f'{1000 + 10 * i},{2000 + 7 * i},{i % 50}\n' for i in range(300)))
    foreign = tmp_path/'foreign.h5'
    foreign.write_bytes(b'\x00' * 64)
    out = tmp_path/'regions.h5'
    rc, stdout, stderr = cli('pointcloud', 'regions', few, shared_data/'smlm'/CB, foreign, '-o', out, *REGION,
                             '--num-regions', '2', '--min-points', '500', '--target-points', '512', check=2)
    err = stderr.strip().splitlines()
    assert len(err) == 2 and any('few.csv' in l and 'fewer than min_points=500' in l for l in err), stderr
    assert any('foreign.h5' in l and 'not an HDF5 file' in l for l in err), stderr
    assert 'skipped 2' in stdout
    data, names, attrs = read_regions(out)
    assert data.shape == (2, 512, 3) and all(n.startswith(CB) for n in names)
    skipped = json.loads(attrs['skipped'])
    assert sorted(Path(s['source']).name for s in skipped) == ['few.csv', 'foreign.h5']


def test_regions_nothing_left_and_bad_options(samples, tmp_path, cli):
    "Every input skipped: one line, exit 2, no file. An unknown key or an absurd value: one line, exit 2."
    out = tmp_path/'none.h5'
    rc, _, err = cli('pointcloud', 'regions', samples/'smlm'/'vlume_excerpt.csv', '-o', out, '--min-points', '500', check=2)
    assert 'no regions written' in err and len(err.strip().splitlines()) == 2, err
    assert not out.exists() and not list(tmp_path.iterdir())
    rc, _, err = cli('pointcloud', 'regions', samples/'smlm'/'vlume_excerpt.csv', '-o', out, '--set', 'regions.min_pionts=3', check=2)
    assert 'unknown key regions.min_pionts' in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli('pointcloud', 'regions', samples/'smlm'/'vlume_excerpt.csv', '-o', out, '--region-size', '0', '100', '100', check=2)
    assert 'region_size must be three lengths > 0' in err
    rc, _, err = cli('pointcloud', 'simulate', '-o', out, '--preset', 'tubulin', check=2)
    assert 'unknown simulation preset' in err
    assert not out.exists()


def test_regions_deterministic(samples, tmp_path, cli):
    "Two runs with the same seed write identical regions; another seed draws other regions; --target-points 0: ragged layout."
    src = samples/'smlm'/'smlm_samples.h5'
    args = ['pointcloud', 'regions', src, *REGION, '--num-regions', '2', '--min-points', '300']
    for name in ('a.h5', 'b.h5'): cli(*args, '--target-points', '256', '-o', tmp_path/name, check=0)
    a, na, _ = read_regions(tmp_path/'a.h5'); b, nb, _ = read_regions(tmp_path/'b.h5')
    assert a.shape == (20, 256, 3) and na == nb and np.array_equal(a, b)
    cli(*args, '--random-seed', '7', '--target-points', '0', '-o', tmp_path/'c.h5', check=0)
    from medvox_nb.pointcloud import open_pointclouds
    c = open_pointclouds(tmp_path/'c.h5')
    with h5py.File(tmp_path/'c.h5') as f: n, ang_c = f['n_region_points'][()], f['angle_deg'][()]
    with h5py.File(tmp_path/'a.h5') as f: ang_a = f['angle_deg'][()]
    assert len(c) == 20 and np.array_equal(c.point_counts(), n) and (n >= 300).all()
    assert not np.allclose(ang_a, ang_c)


def test_regions_sigkill_leaves_no_output(shared_data, tmp_path, cli):
    "A run killed while writing leaves no output file; the next run removes its temporary file and completes."
    out = tmp_path/'regions.h5'
    cmd = [str(MEDVOX), 'pointcloud', 'regions', str(shared_data/'smlm'/TS), '-o', str(out), *REGION,
           '--num-regions', '100000', '--max-attempts', '100000', '--min-points', '100', '--target-points', '64']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, MEDVOX_PROGRESS='0'))
    try:
        t0 = time.time()
        while not list(tmp_path.glob('.regions.h5.*')) and time.time() - t0 < 60: time.sleep(0.05)
        assert list(tmp_path.glob('.regions.h5.*')), 'the writer never started'
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    finally: proc.wait()
    assert not out.exists() and len(list(tmp_path.glob('.regions.h5.*'))) == 1
    cli('pointcloud', 'regions', shared_data/'smlm'/TS, '-o', out, *REGION, '--num-regions', '2', check=0)
    assert out.exists() and not list(tmp_path.glob('.regions.h5.*'))


def test_simulate_cli(tmp_path, cli):
    "Simulated region-sized boxes in the seeds' layout, deterministic per seed, voxelized with nothing dropped; ragged fields."
    args = ['pointcloud', 'simulate', '--preset', 'caulobacter', '--volume', '8000', '8000', '300', '--n-filaments', '2',
            '--filament-length', '6000', '--num-samples', '3', '--target-points', '512']
    cli(*args, '-o', tmp_path/'a.h5', check=0)
    cli(*args, '-o', tmp_path/'b.h5', check=0)
    a, names, attrs = read_regions(tmp_path/'a.h5')
    assert a.shape == (3, 512, 3) and names == ['sim00000', 'sim00001', 'sim00002']
    assert np.array_equal(a, read_regions(tmp_path/'b.h5')[0]) and not np.array_equal(a[0], a[1])
    opts = json.loads(attrs['options'])
    assert opts['labelling'] == 'surface' and opts['volume'] == [8000., 8000., 300.] and opts['n_filaments'] == 2
    from medvox_nb.voxelize import Voxelizer
    vb = Voxelizer(voxel_size=(32, 32, 4), volume_dims=(8000, 8000, 300), origin='zero')(list(a))
    assert (vb.n_dropped == 0).all() and (vb.n_points == 512).all()
    rc, out, _ = cli('pointcloud', 'simulate', '-o', tmp_path/'fields.h5', '--num-samples', '2', '--n-filaments', '1',
                     '--random-seed', '3', '--set', 'simulation.filament_length=3000', check=0)
    assert '2 simulated fields' in out
    with h5py.File(tmp_path/'fields.h5') as f:
        assert f['offsets'].shape == (3,) and (f['n_signal'][()] > 0).all()
        assert json.loads(f.attrs['options'])['filament_length'] == 3000.
