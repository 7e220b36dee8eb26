"Voxelizer: agreement with the seed's scipy gaussian, geometry/affines, batching, counts, errors, inverse, CLI."
import json
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medvox_nb.core import ConfigError, InputError
from fs_faults import medvox_here
from medvox_nb.voxelize import (Voxelizer, VoxelBatch, gaussian_filter_batch, gaussian_matrix, synthetic_cloud,
                                voxelize, voxels_to_points)


def counts_numpy(points, corner, spacing, shape):
    "Independent reference: per-voxel counts the seed's way (np.unique), points outside the box dropped."
    idx = np.floor((points - corner) / spacing).astype(np.int64)
    idx = idx[((idx >= 0) & (idx < np.array(shape))).all(1)]
    u, c = np.unique(idx, axis=0, return_counts=True)
    g = np.zeros(shape)
    g[tuple(u.T)] = c
    return g


def corner_of(vb, vz, b=0):
    return vb.affines[b, :3, 3] - np.diag(vb.affines[b])[:3] / 2


def rel_err(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max()


# 30k points: 32^3 and 48^3 scatter counts then filter; the larger grids filter z while scattering (CPU, sparse
# cloud); the 1000 nm deep box cuts through the cloud, so its z faces are full and the reflection matters
@pytest.mark.parametrize('shape,sigma,depth', [(32, 1.0, 2400), (48, 2.0, 2400), (64, (1.0, 1.0, 0.5), 2400),
                                               ((96, 96, 32), (1.5, 0.8, 2.5), 2400), (96, 1.0, 2400), (64, (1.0, 2.0, 2.0), 1000),
                                               (32, (1.0, 1.0, 3.0), 1000)])
def test_gaussian_matches_scipy(shape, sigma, depth):
    pts = synthetic_cloud(30000, seed=11)
    vz = Voxelizer(shape, 'gaussian', sigma=sigma, volume_dims=(30000, 30000, depth))
    vb = vz(pts)
    ref = gaussian_filter(counts_numpy(pts, corner_of(vb, vz), vz.spacing, vz.grid_shape), sigma, truncate=4.0, mode='reflect')
    assert vb.voxels.dtype == torch.float32 and tuple(vb.voxels.shape) == (1, *vz.grid_shape)
    assert rel_err(vb.voxels[0].numpy(), ref) < 1e-4


def test_minmax_reproduces_seed_pipeline():
    "normalize='minmax' is the seed's method exactly: min-max scaling, rounding, np.unique counts, scipy gaussian."
    pts = synthetic_cloud(20000, seed=3)
    for sigma in (1.0, (2.0, 2.0, 1.0)):
        mn, mx = pts.min(0), pts.max(0)
        idx = np.round((pts - mn) / (mx - mn) * 63).astype(int)
        u, c = np.unique(idx, axis=0, return_counts=True)
        g = np.zeros((64,) * 3); g[tuple(u.T)] = c
        ref = gaussian_filter(g, sigma, truncate=4.0)
        vb = Voxelizer(64, 'gaussian', sigma=sigma, normalize='minmax')(pts)
        assert rel_err(vb.voxels[0].numpy(), ref) < 1e-4
        assert vb.n_dropped[0] == 0 and vb.n_points[0] == len(pts)
        # voxel centre 0 is the minimum, voxel centre 63 the maximum
        np.testing.assert_allclose(vb.affines[0] @ [0, 0, 0, 1], [*mn, 1])
        np.testing.assert_allclose(vb.affines[0] @ [63, 63, 63, 1], [*mx, 1])


def test_filter_large_radius_and_blocks():
    "Kernel radius larger than the axis (reflection wraps) and axis lengths that are not multiples of the block."
    rng = np.random.default_rng(0)
    x = rng.random((2, 7, 45, 70))
    for block in (1, 8, 32, 1000):
        out = gaussian_filter_batch(torch.tensor(x), (3.0, 1.2, 0.7), block=block).numpy()
        ref = np.stack([gaussian_filter(v, (3.0, 1.2, 0.7), mode='reflect', truncate=4.0) for v in x])
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gaussian_matrix(5, 0.0 + 1e-20), np.eye(5))
    # sigma 0 on an axis leaves it alone, as scipy does
    out = gaussian_filter_batch(torch.tensor(x), (0.0, 1.0, 0.0)).numpy()
    np.testing.assert_allclose(out, np.stack([gaussian_filter(v, (0, 1.0, 0)) for v in x]), atol=1e-12)


def test_batch_equals_single_calls():
    clouds = [synthetic_cloud(n, seed=s, offset=o) for n, s, o in [(15000, 1, (0, 0, 0)), (3000, 2, (40000, -5000, 100)), (9000, 3, (0, 0, 0))]]
    clouds[1][:5] = np.inf
    for method in ('occupancy', 'density', 'gaussian'):
        for normalize in ('none', 'max', 'minmax'):
            vz = Voxelizer((40, 32, 24), method, sigma=(1.0, 0.7, 1.3), normalize=normalize)
            vb = vz(clouds)
            for i, c in enumerate(clouds):
                one = vz(c)
                np.testing.assert_allclose(vb.voxels[i].numpy(), one.voxels[0].numpy(), atol=1e-5)
                np.testing.assert_allclose(vb.affines[i], one.affines[0])
                assert (vb.n_points[i], vb.n_dropped[i], vb.n_nonfinite[i]) == (one.n_points[0], one.n_dropped[0], one.n_nonfinite[0])
    # a (B, N, 3) array is a batch; torch tensors work like numpy arrays
    arr = np.stack([synthetic_cloud(2000, seed=s) for s in range(3)])
    a, t = Voxelizer(32)(arr), Voxelizer(32)(torch.tensor(arr, dtype=torch.float32))
    assert len(a) == 3
    # float32 input rounds coordinates (a point on a voxel face may move over): the same up to a few points
    assert (a.n_points == t.n_points).all()
    assert np.abs(a.voxels.numpy() - t.voxels.numpy()).sum() < 0.01 * a.n_points.sum()


def test_affine_known_positions():
    "A point at a known nm position lands in the voxel whose centre (via the affine) is within half a voxel of it."
    rng = np.random.default_rng(5)
    for origin in ('center', 'zero', (-1000., 500., -900.)):
        vz = Voxelizer((50, 40, 30), 'density', volume_dims=(28000, 20000, 1600), padding=(500, 0, 100), origin=origin)
        pts = rng.uniform([0, 1000, -790], [27000, 20000, 790], (5000, 3))
        vb = vz(pts)
        A = vb.affines[0]
        np.testing.assert_allclose(np.diag(A)[:3], vz.spacing)
        np.testing.assert_allclose(vz.spacing, np.array([29000, 20000, 1800]) / [50, 40, 30])
        vol = vb.voxels[0].numpy()
        inv = np.linalg.inv(A)
        ijk = np.floor((pts @ inv[:3, :3].T + inv[:3, 3]) + 0.5).astype(int)   # nearest voxel centre
        ok = ((ijk >= 0) & (ijk < vol.shape)).all(1)
        assert ok.sum() == vb.n_points[0]
        centres = ijk[ok] @ A[:3, :3].T + A[:3, 3]
        assert (np.abs(centres - pts[ok]) <= vz.spacing / 2 + 1e-6).all()
        # those voxels are exactly the occupied ones, with the right counts
        ref = np.zeros(vol.shape); np.add.at(ref, tuple(ijk[ok].T), 1)
        np.testing.assert_array_equal(vol, ref)
    # explicit origin is the lower corner of the padded box; 'zero' puts the volume_dims region at [0, vd] x [0, vd] x +-vd_z/2
    vz = Voxelizer(10, 'density', volume_dims=(1000, 1000, 100), padding=(100, 100, 10), origin='zero')
    vb = vz(np.array([[0., 0., 0.], [999.9, 999.9, 49.9], [-99., -99., -59.], [1100., 0., 0.]]))
    np.testing.assert_allclose(vb.affines[0][:3, 3], np.array([-100, -100, -60]) + vz.spacing / 2)
    assert vb.n_points[0] == 3 and vb.n_dropped[0] == 1   # the far face is outside (half-open box)
    np.testing.assert_allclose(vz.affine_for([-100., -100., -60.]), vb.affines[0])


def test_center_origin_follows_cloud():
    pts = synthetic_cloud(5000, seed=9)
    vz = Voxelizer(32, 'density')
    a, b = vz(pts), vz(pts + [123456., -7890., 300.])
    np.testing.assert_allclose(a.voxels.numpy(), b.voxels.numpy())
    np.testing.assert_allclose(b.affines[0][:3, 3] - a.affines[0][:3, 3], [123456., -7890., 300.], atol=1e-6)
    centre = a.affines[0] @ [15.5, 15.5, 15.5, 1]
    np.testing.assert_allclose(centre[:3], (pts.min(0) + pts.max(0)) / 2, atol=1e-6)


def test_counts_dropped_nonfinite_and_invariants():
    pts = synthetic_cloud(10000, seed=4)
    bad = pts.copy()
    bad[:11] = np.nan; bad[11:14, 2] = np.inf; bad[14:20] = [1e6, 0, 0]
    vz = Voxelizer(48, 'density', origin='zero')
    vb = vz(bad)
    fin = bad[np.isfinite(bad).all(1)]
    inside = ((fin >= corner_of(vb, vz)) & (fin < corner_of(vb, vz) + vz.box_size)).all(1)
    assert vb.n_nonfinite[0] == 14
    assert vb.n_dropped[0] == (~inside).sum() >= 6
    assert vb.n_points[0] == inside.sum()
    assert vb.n_input[0] == len(bad)
    vol = vb.voxels[0].numpy()
    assert vol.sum() == vb.n_points[0] and (vol == np.round(vol)).all()            # density: counts
    occ = Voxelizer(48, 'occupancy', origin='zero')(bad).voxels[0].numpy()
    np.testing.assert_array_equal(occ, (vol > 0).astype(np.float32))                  # occupancy: 0/1 where counts > 0
    g = Voxelizer(48, 'gaussian', sigma=1.5, origin='zero')(bad).voxels[0].numpy()
    assert abs(g.sum() - vb.n_points[0]) < 1e-3 * vb.n_points[0] and g.min() >= 0   # gaussian keeps the count
    m = Voxelizer(48, 'gaussian', normalize='max', origin='zero')(bad).voxels[0]
    assert float(m.max()) == pytest.approx(1.0) and float(m.min()) >= 0


def test_padding_enlarges_box():
    pts = synthetic_cloud(8000, seed=2)
    plain = Voxelizer(32, 'density', volume_dims=(20000, 20000, 1000))(pts)
    padded = Voxelizer(32, 'density', volume_dims=(20000, 20000, 1000), padding=(4000, 4000, 300))(pts)
    np.testing.assert_allclose(np.diag(padded.affines[0])[:3], np.array([28000, 28000, 1600]) / 32)
    assert padded.n_dropped[0] < plain.n_dropped[0]
    # same box as no padding with volume_dims + 2 * padding
    same = Voxelizer(32, 'density', volume_dims=(28000, 28000, 1600))(pts)
    np.testing.assert_array_equal(same.voxels.numpy(), padded.voxels.numpy())
    np.testing.assert_allclose(same.affines, padded.affines)


def test_params_roundtrip_yaml_safe():
    import yaml
    vz = Voxelizer((64, 64, 32), 'gaussian', sigma=(1, 1, 0.5), padding=(100, 100, 0), origin=(0, 0, -800), normalize='max')
    p = vz.params()
    assert yaml.safe_load(yaml.safe_dump(p)) == p
    assert json.loads(json.dumps(p)) == p
    assert p['voxel_size'] == [64, 64, 32] and p['sigma'] == [1.0, 1.0, 0.5] and p['origin'] == [0.0, 0.0, -800.0]
    assert Voxelizer.from_params(p).params() == p


@pytest.mark.parametrize('kw,name', [(dict(voxel_size=0), 'voxel_size'), (dict(voxel_size=-3), 'voxel_size'), (dict(voxel_size=1025), 'voxel_size'),
                                     (dict(voxel_size=(64, 64)), 'voxel_size'), (dict(voxel_size=32.5), 'voxel_size'), (dict(sigma=-0.1), 'sigma'),
                                     (dict(sigma=float('nan')), 'sigma'), (dict(volume_dims=(0, 1, 1)), 'volume_dims'),
                                     (dict(volume_dims=(1, -1, 1)), 'volume_dims'), (dict(method='voxels'), 'method'),
                                     (dict(normalize='zscore'), 'normalize'), (dict(origin='left'), 'origin'), (dict(padding=(0, 0, -1)), 'padding')])
def test_config_errors(kw, name):
    with pytest.raises(ConfigError, match=name):
        Voxelizer(**kw)


def test_input_errors_name_sample():
    ok = synthetic_cloud(1000, seed=1)
    vz = Voxelizer(32, origin='zero')
    cases = [([ok, np.zeros((0, 3))], 1, 'empty point cloud'), ([np.full((4, 3), np.nan), ok], 0, 'no finite coordinates'),
             ([ok, ok, ok + [0, 0, 5000]], 2, 'none of the 1000 points'), ([ok, ok[:, :2]], 1, r'expected an \(N, 3\) array'),
             ([ok, np.array([['a', 'b', 'c']])], 1, 'must be numbers')]
    for clouds, sample, msg in cases:
        with pytest.raises(InputError, match=msg) as e:
            vz(clouds)
        assert e.value.sample == sample and f'sample {sample}' in str(e.value)
    with pytest.raises(InputError):
        vz([])


def test_voxels_to_points_roundtrip():
    pts = synthetic_cloud(20000, seed=8)
    vz = Voxelizer(40, 'gaussian', sigma=1.0, volume_dims=(30000, 30000, 2400))
    vb = vz(pts)
    back = voxels_to_points(vb.voxels[0], vb.affines[0], seed=0)
    corner = corner_of(vb, vz)
    assert back.shape == (vb.n_points[0], 3) and back.dtype == np.float64
    assert ((back >= corner) & (back < corner + vz.box_size)).all()
    dens = Voxelizer(40, 'density', volume_dims=(30000, 30000, 2400), origin=tuple(corner))
    again = dens(back)
    assert again.n_dropped[0] == 0 and again.n_points[0] == vb.n_points[0]
    # every sampled point stays in the voxel it was drawn from, so the counts of a sample are a
    # multinomial draw proportional to the volume: with 10x the points they match it closely
    many = dens(voxels_to_points(vb.voxels[0], vb.affines[0], n_points=10 * vb.n_points[0], seed=2)).voxels[0].numpy() / 10
    assert np.corrcoef(vb.voxels[0].numpy().ravel(), many.ravel())[0, 1] > 0.98
    assert (many[vb.voxels[0].numpy() <= 0] == 0).all()
    # voxelize -> points -> voxelize with the same method: close to the original (plus one more blur)
    again_g = Voxelizer(40, 'gaussian', sigma=1.0, volume_dims=(30000, 30000, 2400), origin=tuple(corner))(back).voxels[0].numpy()
    blurred = gaussian_filter(vb.voxels[0].numpy().astype(np.float64), 1.0, truncate=4.0)
    assert np.corrcoef(blurred.ravel(), again_g.ravel())[0, 1] > 0.95
    # reproducible with a seed, threshold excludes low voxels, explicit n_points
    np.testing.assert_array_equal(back, voxels_to_points(vb.voxels[0].numpy(), vb.affines[0], seed=0))
    v = vb.voxels[0].numpy()
    few = voxels_to_points(v, vb.affines[0], n_points=3000, threshold=0.5 * v.max(), seed=1)
    ijk = np.floor((few - corner) / vz.spacing).astype(int)
    assert len(few) == 3000 and (v[tuple(ijk.T)] > 0.5 * v.max()).all()
    with pytest.raises(InputError, match='no voxel above threshold'):
        voxels_to_points(v, vb.affines[0], threshold=v.max())
    with pytest.raises(InputError, match='NaN'):
        voxels_to_points(np.full((4, 4, 4), np.nan), np.eye(4))


def test_voxelize_convenience():
    pts = synthetic_cloud(3000, seed=6)
    vol, A = voxelize(pts, voxel_size=24, method='occupancy')
    assert vol.shape == (24, 24, 24) and vol.dtype == np.float32 and A.shape == (4, 4)
    assert set(np.unique(vol)) <= {0.0, 1.0}


@pytest.fixture
def mv(capsys):
    "`medvox` in this process (torch imported once per session; see fs_faults.medvox_here)."
    return lambda *args, check=None: medvox_here(capsys, *args, check=check)


def _write_csv(path, pts):
    np.savetxt(path, pts, delimiter=',', header='x,y,z', comments='')
    return path


def test_cli_voxelize(tmp_path, medvox):
    pytest.importorskip('medvox_nb.pointcloud', reason='the CLI reads points with medvox_nb.pointcloud')
    pts = synthetic_cloud(6000, seed=12)
    src = _write_csv(tmp_path/'cloud.csv', pts)
    out = tmp_path/'out'/'v.npz'
    p = medvox('voxelize', src, '-o', out, '--voxel-size', '32', '--voxelization-method', 'gaussian', '--sigma', '1', '1', '0.5',
               '--volume-dims', '28000', '28000', '1600', '--padding', '0', '0', '100', check=0)
    assert 'v.npz' in p.stdout
    with np.load(out) as f:
        params = json.loads(str(f['params']))
        vol, A = f['voxels'], f['affine']
        assert int(f['n_points']) + int(f['n_dropped']) == len(pts)
        assert json.loads(str(f['source']))['path'] == str(src)
    assert params['sigma'] == [1.0, 1.0, 0.5] and params['padding'] == [0.0, 0.0, 100.0]
    ref = Voxelizer.from_params(params)(pts)
    np.testing.assert_allclose(vol, ref.voxels[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(A, ref.affines[0], rtol=1e-9)
    assert sorted(x.name for x in out.parent.iterdir()) == ['v.npz']   # no temporary left behind


def test_cli_errors(tmp_path, mv):
    src = _write_csv(tmp_path/'cloud.csv', synthetic_cloud(100, seed=1))
    p = mv('voxelize', src, '-o', tmp_path/'v.npz', '--voxel-size', '0')
    assert p.returncode == 2 and 'voxel_size' in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = mv('voxelize', src, '-o', tmp_path/'v.npz', '--sigma', '-1')
    assert p.returncode == 2 and 'sigma' in p.stderr
    p = mv('voxelize', src, '-o', tmp_path/'v.npz', '--origin', 'left')
    assert p.returncode == 2 and 'origin' in p.stderr
    assert not (tmp_path/'v.npz').exists()
    pytest.importorskip('medvox_nb.pointcloud', reason='reading points needs medvox_nb.pointcloud')
    far = _write_csv(tmp_path/'far.csv', synthetic_cloud(100, seed=1) + [1e6, 0, 0])
    p = mv('voxelize', far, '-o', tmp_path/'v.npz', '--origin', 'zero')
    assert p.returncode == 2 and 'far.csv' in p.stderr and 'none of the 100 points' in p.stderr
    assert not (tmp_path/'v.npz').exists()


def test_cli_real_thunderstorm(tmp_path, mv, shared_data):
    "The real ThunderSTORM export (quoted headers with units) through the CLI, checked against the same points read with pandas."
    import pandas as pd
    src = shared_data/'smlm'/'ThunderSTORM_TS3D.csv'
    out = tmp_path/'ts.npz'
    mv('voxelize', src, '-o', out, '--voxel-size', '64', '--voxelization-method', 'density', '--volume-dims', '6000', '6000', '1600', check=0)
    pts = pd.read_csv(src)[['x [nm]', 'y [nm]', 'z [nm]']].to_numpy()
    with np.load(out) as f:
        vol, A = f['voxels'], f['affine']
        assert int(f['n_points']) == len(pts) == vol.sum() and int(f['n_dropped']) == 0
    ref = counts_numpy(pts, A[:3, 3] - np.diag(A)[:3] / 2, np.diag(A)[:3], (64, 64, 64))
    np.testing.assert_array_equal(vol, ref)
    np.testing.assert_allclose(A[:3, 3] + 31.5 * np.diag(A)[:3], (pts.min(0) + pts.max(0)) / 2, atol=1e-6)  # box centred on the cloud


def test_batch_chunks_equal_one_pass(monkeypatch):
    "Large batches are scattered and filtered a chunk of clouds at a time; the result is the same as in one pass."
    import medvox_nb.voxelize as V
    clouds = [synthetic_cloud(4000 + 1000 * s, seed=s, offset=(s * 1000., 0, 0)) for s in range(7)]
    clouds[3][:50] = np.nan
    for method in ('density', 'gaussian'):
        vz = Voxelizer(32, method, sigma=(1.0, 1.5, 0.8))
        whole = vz(clouds)
        monkeypatch.setattr(V, 'CHUNK_VOXELS', 2 * 32 ** 3)     # 2 clouds per chunk: 4 chunks, the last one short
        parts = vz(clouds)
        monkeypatch.setattr(V, 'CHUNK_VOXELS', 1 << 21)
        np.testing.assert_allclose(parts.voxels.numpy(), whole.voxels.numpy(), atol=1e-5)
        np.testing.assert_array_equal(parts.n_points, whole.n_points)


def test_cli_defaults_and_flags_come_from_the_config(tmp_path, mv):
    "No flag: the voxelizer is exactly VoxelizeConfig's defaults; every config field has its flag, with the config's default in the help."
    from dataclasses import fields
    from medvox_nb.voxelize import VoxelizeConfig
    src = _write_csv(tmp_path/'cloud.csv', synthetic_cloud(2000, seed=3))
    mv('voxelize', src, '-o', tmp_path/'v.npz', check=0)
    with np.load(tmp_path/'v.npz') as f: params = json.loads(str(f['params']))
    assert params == Voxelizer.from_config(VoxelizeConfig()).params()
    help_text = ' '.join(mv('voxelize', '--help', check=0).stdout.split())
    for f in fields(VoxelizeConfig):
        assert f'--{f.name.replace("_", "-")}' in help_text, f.name
        assert f.metadata['help'].split()[0] in help_text, f.name
    assert '--voxel_size' in help_text and '(default: 64)' in help_text   # the LDM seed's underscore spelling too


def test_command_modules_do_not_import_torch():
    "`medvox <cmd> --help` must start fast: the command modules leave torch (3.5 s to import) until it is needed."
    import subprocess, sys
    code = "import medvox_nb.voxelize, medvox_nb.prerender, medvox_nb.dataset, sys; assert 'torch' not in sys.modules, 'torch imported'"
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# --- file-system failures: one line naming the path, exit 2 (run in-process through medvox_nb.core.main)

def test_cli_output_is_a_folder_or_under_a_file(tmp_path, capsys):
    from fs_faults import run_main, assert_one_line
    src = _write_csv(tmp_path/'cloud.csv', synthetic_cloud(500, seed=1))
    (tmp_path/'adir').mkdir(); (tmp_path/'afile').write_text('x')
    assert_one_line(*run_main(capsys, 'voxelize', src, '-o', tmp_path/'adir', '--voxel-size', '16'), tmp_path/'adir', 'is a folder')
    assert_one_line(*run_main(capsys, 'voxelize', src, '-o', tmp_path/'afile'/'v.npz', '--voxel-size', '16'),
                    tmp_path/'afile'/'v.npz', 'a parent of this path is a file')
    assert (tmp_path/'afile').read_text() == 'x' and not any((tmp_path/'adir').iterdir())


@pytest.mark.parametrize('err,words', [(13, 'permission denied'), (30, 'read-only'), (28, 'no space left')])
def test_cli_injected_fs_errors(tmp_path, capsys, monkeypatch, err, words):
    from fs_faults import run_main, assert_one_line, inject
    src = _write_csv(tmp_path/'cloud.csv', synthetic_cloud(500, seed=1))
    (tmp_path/'out').mkdir()
    inject(monkeypatch, tmp_path/'out', err)
    assert_one_line(*run_main(capsys, 'voxelize', src, '-o', tmp_path/'out'/'v.npz', '--voxel-size', '16'), tmp_path/'out', words)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == []          # no partial file, no temporary left


def test_cli_real_read_only_and_full_disk(tmp_path, capsys):
    from fs_faults import run_main, assert_one_line, read_only_dir, full_dir
    src = _write_csv(tmp_path/'cloud.csv', synthetic_cloud(3000, seed=1))
    with read_only_dir(tmp_path/'ro') as ro:
        assert_one_line(*run_main(capsys, 'voxelize', src, '-o', ro/'v.npz', '--voxel-size', '16'), ro, 'read-only')
    with full_dir(tmp_path/'full', '16k') as full:
        line = assert_one_line(*run_main(capsys, 'voxelize', src, '-o', full/'v.npz', '--voxel-size', '128'), full/'v.npz', 'no space left')
        assert list(full.iterdir()) == [], line                                 # the temporary is removed
