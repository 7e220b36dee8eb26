"""Sparse SDFs: the native kernel against brute force, signs against the mask and an independent winding number,
reconstruction IoU/Chamfer at 64³ and 128³ on real organs and held-out analytic shapes, meshes with holes,
files, exports (OpenVDB level set checked by OpenVDB), and the `medvox sdf` command: seed outputs, resume
after SIGKILL, bad inputs, ranks, workers, a missing kernel."""
import os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from conftest import MEDVOX, ROOT, run_medvox
from medvox_nb.core import DependencyError, InputError, ConfigError, MedvoxError
from medvox_nb.sdf import compute as C

pytestmark = pytest.mark.skipif(not C.sdf_kernel_available(), reason='medvox_nb._sdf not built')
SMALL_SEG = ROOT/'data_samples'/'ct'/'ct_small_seg.nii.gz'
ORGANS = {1: 'spleen', 2: 'kidney_right', 5: 'liver', 6: 'stomach', 20: 'colon'}


def load_seg(path):
    import nibabel as nib
    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, float)


@pytest.fixture(scope='module')
def seg(shared_data):
    return load_seg(shared_data/'ct'/'example_seg.nii.gz')


def ball_mask():
    "Held-out: a ball voxelised on anisotropic voxels (1.5, 1.5, 3 mm)."
    c = np.array([19.2, 17.6, 8.7])[:, None, None, None]
    r = np.linalg.norm((np.indices((40, 36, 18)) - c) * np.array([1.5, 1.5, 3.0])[:, None, None, None], axis=0)
    return r < 21.5, np.diag([1.5, 1.5, 3.0, 1.])


def torus_mask():
    "Held-out: a torus (genus 1) voxelised on 2 mm voxels, tilted."
    x, y, z = (np.indices((48, 44, 30)) - np.array([23.6, 21.3, 14.8])[:, None, None, None]) * 2.0
    a = np.deg2rad(25); y, z = y * np.cos(a) - z * np.sin(a), y * np.sin(a) + z * np.cos(a)
    return np.hypot(np.hypot(x, y) - 26.0, z) < 9.5, np.diag([2.0, 2.0, 2.0, 1.])


def winding_number(P, V, F, chunk=48):
    "Generalised winding number (solid angles, Van Oosterom & Strackee): an inside test independent of the kernel."
    T = V[F]
    out = np.empty(len(P))
    for s in range(0, len(P), chunk):
        d = T[None] - P[s:s + chunk, None, None]
        a, b, c = d[..., 0, :], d[..., 1, :], d[..., 2, :]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        num = np.einsum('...i,...i', a, np.cross(b, c))
        den = la * lb * lc + np.einsum('...i,...i', a, b) * lc + np.einsum('...i,...i', b, c) * la + np.einsum('...i,...i', c, a) * lb
        out[s:s + chunk] = 2 * np.arctan2(num, den).sum(1) / (4 * np.pi)
    return out


# ---------------------------------------------------------------- the kernel against brute force

@pytest.mark.parametrize('label,R', [(1, 64), (2, 128)])
def test_band_distances_equal_brute_force(seg, label, R):
    m = seg[0] == label
    d = C.sparse_sdf_from_mask(m, R, affine=seg[1], fit='shape')
    g = C.sdf_grid(d)
    v, f = C.mask_surface(m)
    vg = g.from_source(v)
    idx, dist = d['sparse_index'], d['sparse_sdf'][:, 0] * d['threshold_factor']
    rng = np.random.default_rng(label)
    sel = rng.choice(len(idx), 300, replace=False)
    ref = C.point_triangle_distance(idx[sel], vg, f)
    assert np.abs(np.abs(dist[sel]) - ref).max() <= 1e-5
    # completeness: grid points next to the band's outer layer that are not in it are at least the band away
    outer = idx[np.abs(dist) > 0.8 * d['threshold_factor']]
    cand = np.unique((outer[rng.choice(len(outer), 250)] + rng.integers(-1, 2, (250, 3))).clip(0, R - 1), axis=0)
    have = {tuple(p) for p in idx}
    cand = np.array([p for p in cand if tuple(p) not in have])
    assert len(cand) > 40
    assert C.point_triangle_distance(cand, vg, f).min() >= d['threshold_factor'] - 1e-5
    assert len(np.unique(idx, axis=0)) == len(idx)


def test_band_is_exact_on_held_out_torus():
    m, A = torus_mask()
    d = C.sparse_sdf_from_mask(m, 64, affine=A, fit='shape')
    v, f = C.mask_surface(m)
    vg = C.sdf_grid(d).from_source(v)
    rng = np.random.default_rng(7)                                        # grid points in and around the band
    near = np.unique((d['sparse_index'][rng.choice(len(d['sparse_index']), 450)] + rng.integers(-3, 4, (450, 3))).clip(0, 63), axis=0)
    ref = C.point_triangle_distance(near, vg, f)
    assert (ref < 4.0).sum() > 150 and (ref >= 4.0).sum() > 50
    lut = {tuple(p): i for i, p in enumerate(d['sparse_index'])}
    got = np.array([lut.get(tuple(p), -1) for p in near])
    assert ((got >= 0) == (ref < 4.0)).all()                              # in the band iff closer than the band
    assert np.abs(np.abs(d['sparse_sdf'][got[got >= 0], 0]) * 4.0 - ref[got >= 0]).max() <= 1e-5


# ---------------------------------------------------------------- signs

def test_sign_is_the_mask_on_its_own_lattice(seg):
    m = np.zeros((122, 122, 122), bool); m[:, :101, :30] = seg[0] == 5
    d = C.sparse_sdf_from_mask(m, 122, affine=seg[1])                    # 'volume' at the mask's size: grid = lattice
    assert np.array_equal(d['scale'], [1, 1, 1]) and np.array_equal(d['offset'], [0, 0, 0])
    idx = d['sparse_index']
    assert np.array_equal(d['sparse_sdf'][:, 0] < 0, m[idx[:, 0], idx[:, 1], idx[:, 2]])


@pytest.mark.parametrize('R', [64, 128])
def test_sign_agrees_with_independent_winding_number(seg, R):
    m = seg[0] == 3                                                       # kidney_left
    d = C.sparse_sdf_from_mask(m, R, affine=seg[1], fit='shape')
    v, f = C.mask_surface(m)
    vg = C.sdf_grid(d).from_source(v)
    sdf = d['sparse_sdf'][:, 0]
    sel = np.random.default_rng(R).choice(np.flatnonzero(np.abs(sdf) * 4 > 1e-6), 800, replace=False)
    w = winding_number(d['sparse_index'][sel].astype(float), vg, f)
    assert (np.abs(np.abs(w) - 0.5) > 0.25).all()                         # clearly in or out
    assert np.array_equal(sdf[sel] < 0, np.abs(w) > 0.5)


# ---------------------------------------------------------------- reconstruction: IoU and Chamfer

def _bars(d, m):
    s = C.reconstruction_scores(d, m, n=5000)
    assert s['iou'] >= 0.999 and s['chamfer'] <= 0.1, s
    return s


@pytest.mark.parametrize('R', [64, 128])
@pytest.mark.parametrize('label', list(ORGANS))
def test_reconstruction_real_organs_shape_fit(seg, label, R):
    m = seg[0] == label
    _bars(C.sparse_sdf_from_mask(m, R, affine=seg[1], fit='shape'), m)


@pytest.mark.parametrize('R', [64, 128])
@pytest.mark.parametrize('label', [1, 5])
def test_reconstruction_real_organs_volume_fit(seg, label, R):
    m = seg[0] == label
    _bars(C.sparse_sdf_from_mask(m, R, affine=seg[1], fit='volume'), m)


@pytest.mark.parametrize('fit', ['shape', 'volume'])
@pytest.mark.parametrize('R', [64, 128])
@pytest.mark.parametrize('shape', ['ball', 'torus'])
def test_reconstruction_held_out_shapes(shape, R, fit):
    m, A = ball_mask() if shape == 'ball' else torus_mask()
    _bars(C.sparse_sdf_from_mask(m, R, affine=A, fit=fit), m)


def test_reconstruction_embedded_sample_anisotropic():
    s, A = load_seg(SMALL_SEG)                                            # 6 x 6 x 3 mm voxels, always in the repo
    m = s == np.bincount(s.ravel())[1:].argmax() + 1
    _bars(C.sparse_sdf_from_mask(m, 64, affine=A, fit='shape'), m)


# ---------------------------------------------------------------- meshes

def test_mesh_torus_exact_and_signed():
    import trimesh
    t = trimesh.creation.torus(major_radius=3.0, minor_radius=1.1, major_sections=96, minor_sections=48)
    d = C.sparse_sdf_from_mesh(t.vertices, t.faces, 64)
    g = C.sdf_grid(d)
    p = g.to_world(d['sparse_index'])
    got = d['sparse_sdf'][:, 0] * d['threshold_factor'] * g.voxel_size[0]
    exact = np.hypot(np.hypot(p[:, 0], p[:, 1]) - 3.0, p[:, 2]) - 1.1
    facet = 4.1 * (1 - np.cos(np.pi / 96)) + 1.1 * (1 - np.cos(np.pi / 48)) + 1e-9
    assert np.abs(got - exact).max() <= facet
    assert ((got < 0) == (exact < 0))[np.abs(exact) > facet].all()
    sel = np.random.default_rng(0).choice(len(p), 300, replace=False)
    ref = C.point_triangle_distance(d['sparse_index'][sel], g.from_source(t.vertices), t.faces)
    assert np.abs(np.abs(d['sparse_sdf'][sel, 0]) * 4.0 - ref).max() <= 1e-5


def test_mesh_with_small_holes_keeps_signs():
    import trimesh
    s = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    rng = np.random.default_rng(3)
    holes = rng.choice(len(s.faces), 6, replace=False)                    # six missing triangles
    faces = np.delete(s.faces, holes, axis=0)
    d = C.sparse_sdf_from_mesh(s.vertices, faces, 64)
    g = C.sdf_grid(d)
    p = g.to_world(d['sparse_index'])
    r = np.linalg.norm(p, axis=1)
    hole_c = s.vertices[s.faces[holes]].mean(1)
    far = np.min(np.linalg.norm(p[:, None] - hole_c[None], axis=2), axis=1) > 1.5   # > 1.5 mm (~5 grid steps) from a hole
    assert ((d['sparse_sdf'][:, 0] < 0) == (r < 10.0))[far & (np.abs(r - 10) > 0.1)].all()
    # parity along z alone is fooled by holes; the vote is not
    zi = C.inside_points(g.from_source(s.vertices), faces, d['sparse_index'], 64, sign='z')
    assert (zi != (r < 10.0))[far & (np.abs(r - 10) > 0.1)].sum() > 0


@pytest.mark.parametrize('ext', ['.obj', '.ply', '.stl', '.off'])
def test_load_mesh_formats(tmp_path, ext):
    import trimesh
    t = trimesh.creation.box(extents=(2, 3, 4))
    t.export(str(tmp_path/f'box{ext}'))
    V, F = C.load_mesh(tmp_path/f'box{ext}')
    assert len(F) == 12 and np.allclose(V.min(0), [-1, -1.5, -2]) and np.allclose(V.max(0), [1, 1.5, 2])
    d = C.sparse_sdf_from_mesh(V, F, 32)
    assert (d['sparse_sdf'] < 0).any() and (d['sparse_sdf'] > 0).any()


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(InputError, match='empty'): C.sparse_sdf_from_mask(np.zeros((8, 8, 8), bool), 32)
    with pytest.raises(InputError, match='label map'): C.sparse_sdf_from_mask(np.full((8, 8, 8), 3, np.uint8), 32)
    with pytest.raises(InputError, match='3D'): C.sparse_sdf_from_mask(np.ones((8, 8), bool), 32)
    with pytest.raises(ConfigError, match='resolution'): C.sparse_sdf_from_mask(np.ones((4, 4, 4), bool), 4)
    with pytest.raises(ConfigError, match='no room'): C.sparse_sdf_from_mask(np.ones((4, 4, 4), bool), 10, fit='shape')
    with pytest.raises(ConfigError, match='threshold_factor'): C.sparse_sdf_from_mask(np.ones((4, 4, 4), bool), 32, threshold_factor=0)
    with pytest.raises(InputError, match='NaN'): C.sparse_sdf_from_mesh([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], [[0, 1, 2]], 32)
    with pytest.raises(InputError, match='faces index'): C.sparse_sdf_from_mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 3]], 32)
    with pytest.raises(InputError, match='affine'): C.sparse_sdf_from_mask(np.ones((4, 4, 4), bool), 32, affine=np.zeros((4, 4)))


# ---------------------------------------------------------------- files and exports

def test_save_load_and_seed_files(tmp_path):
    m, A = ball_mask()
    d = C.sparse_sdf_from_mask(m, 48, affine=A, fit='shape')
    C.save_sparse_sdf(tmp_path/'b.npz', d)
    back = C.load_sparse_sdf(tmp_path/'b.npz')
    for k in ('sparse_sdf', 'sparse_index', 'scale', 'offset', 'affine', 'grid_to_world'): assert np.array_equal(back[k], d[k]), k
    assert back['resolution'] == 48 and back['threshold_factor'] == 4.0 and back['input_type'] == 'mask' and back['fit'] == 'shape'
    assert [q.name for q in tmp_path.iterdir()] == ['b.npz']               # no temporary left behind
    with np.load(tmp_path/'b.npz') as z:                                   # the seed's keys and dtypes
        assert z['sparse_sdf'].dtype == np.float32 and z['sparse_sdf'].shape[1] == 1 and z['sparse_index'].dtype == np.int32
        assert int(z['resolution']) == 48
    np.savez(tmp_path/'seed.npz', sparse_sdf=d['sparse_sdf'], sparse_index=d['sparse_index'], resolution=48)
    s = C.load_sparse_sdf(tmp_path/'seed.npz')
    assert s['scale'] is None and np.array_equal(s['sparse_index'], d['sparse_index'])
    np.savez(tmp_path/'bad.npz', sparse_sdf=d['sparse_sdf'], sparse_index=d['sparse_index'] + 100, resolution=48)
    with pytest.raises(MedvoxError, match='outside'): C.load_sparse_sdf(tmp_path/'bad.npz')


def test_exports_level_set_checked_by_openvdb(tmp_path):
    from medvox_nb import vdb
    if not vdb.vdb_available(): pytest.skip('medvox_nb._openvdb not built')
    m, A = ball_mask()
    d = C.sparse_sdf_from_mask(m, 64, affine=A, fit='shape')
    C.save_sdf_vdb(tmp_path/'b.vdb', d)
    assert vdb.check_level_set(tmp_path/'b.vdb', checks=8) == ''
    g = vdb.read_vdb(tmp_path/'b.vdb')['sdf']
    assert g.grid_class == 'level_set' and len(g) == len(d['sparse_index'])
    wc = g.index_to_world()                                                # world positions and distances in mm
    r = np.linalg.norm(wc - (np.array([19.2, 17.6, 8.7]) * [1.5, 1.5, 3.0]), axis=1)
    assert np.abs(g.values - (r - 21.5)).max() < 1.6                       # within the voxelisation of the ball (1.5-3 mm voxels)
    if shutil.which('vdb_print'):
        out = subprocess.run(['vdb_print', '-l', str(tmp_path/'b.vdb')], capture_output=True, text=True, check=True).stdout
        assert 'level set' in out.lower() or 'level_set' in out.lower(), out
    C.save_isosurface(tmp_path/'b.ply', d)
    import trimesh
    t = trimesh.load(str(tmp_path/'b.ply'))
    assert t.is_watertight and abs(np.linalg.norm(t.vertices - t.vertices.mean(0), axis=1).mean() - 21.5) < 1.5
    dv = C.sparse_sdf_from_mask(m, 64, affine=A, fit='volume')             # anisotropic voxels: not a level set
    with pytest.raises(InputError, match='cubic'): C.save_sdf_vdb(tmp_path/'v.vdb', dv)


# ---------------------------------------------------------------- the command

def run_main(*args) -> int:
    "`medvox ARGS` in this process (core.main, the console script's entry point): no interpreter start-up."
    from medvox_nb.core import main
    return main([str(a) for a in args])


def _arrays(out: Path) -> dict:
    res = {}
    for f in sorted(f for f in (out/'sparse_sdf').glob('*.npz') if not f.name.startswith('.')):
        with np.load(f) as z: res[f.name] = (z['sparse_index'].tobytes(), z['sparse_sdf'].tobytes())
    return res


def test_cli_seed_outputs_metadata_and_rerun(tmp_path):
    import pandas as pd, trimesh
    trimesh.creation.icosphere(subdivisions=3, radius=2.0).export(str(tmp_path/'sphere.off'))
    args = ['sdf', SMALL_SEG, tmp_path/'sphere.off', '--output_dir', tmp_path/'out', '--resolutions', '32,48', '--labels', '1,5']
    p = run_medvox(*args, check=0)
    assert '3 instances complete' in p.stdout
    names = sorted(f.name for f in (tmp_path/'out'/'sparse_sdf').iterdir())
    assert names == ['ct_small_seg_label1_r32.npz', 'ct_small_seg_label1_r48.npz', 'ct_small_seg_label5_r32.npz',
                     'ct_small_seg_label5_r48.npz', 'sphere_r32.npz', 'sphere_r48.npz']
    meta = pd.read_csv(tmp_path/'out'/'metadata.csv').set_index('sha256')
    assert {'sdf_computed', 'r32_num_points', 'r48_num_points'} <= set(meta.columns) and meta['sdf_computed'].all()
    assert meta.loc['sphere', 'r48_num_points'] == len(np.load(tmp_path/'out'/'sparse_sdf'/'sphere_r48.npz')['sparse_index'])
    assert (tmp_path/'out'/'sparse_sdf_computed_0.csv').exists() and (tmp_path/'out'/'sdf_config.yaml').exists()
    before = {f: f.stat().st_mtime_ns for f in (tmp_path/'out'/'sparse_sdf').iterdir()}
    assert run_main(*args) == 0
    assert {f: f.stat().st_mtime_ns for f in (tmp_path/'out'/'sparse_sdf').iterdir()} == before     # kept
    assert run_main(*args, '--no_skip') == 0
    assert all(f.stat().st_mtime_ns != t for f, t in before.items())                                # recomputed


def test_cli_sigkill_then_resume_equals_uninterrupted(shared_data, tmp_path):
    src = shared_data/'ct'/'example_seg.nii.gz'
    args = ['sdf', src, '--resolutions', '48,64', '--fit', 'shape', '--threads', '1', '--labels', '1,2,3,4,5,6,11,14,18,19,20,30,31,32,86,87']
    assert run_main(*args, '--output_dir', tmp_path/'ref') == 0
    killed = tmp_path/'killed'
    proc = subprocess.Popen([str(MEDVOX), *map(str, args), '--output_dir', str(killed)], env=dict(os.environ, MEDVOX_PROGRESS='0'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    visible = lambda: [f for f in (killed/'sparse_sdf').glob('*.npz') if not f.name.startswith('.')] if (killed/'sparse_sdf').is_dir() else []
    while time.time() < deadline and len(visible()) < 6: time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    n_done = len(visible())
    assert 6 <= n_done < 32 and not (killed/'metadata.csv').exists(), n_done   # really killed mid-run
    for f in visible(): C.load_sparse_sdf(f)                                     # every visible file is complete
    assert run_main(*args, '--output_dir', killed) == 0
    assert _arrays(killed) == _arrays(tmp_path/'ref')
    assert not [q for q in (killed/'sparse_sdf').iterdir() if q.name.startswith('.')]


def test_cli_bad_inputs_recorded_and_skipped(tmp_path):
    import pandas as pd
    d = tmp_path/'in'; d.mkdir()
    shutil.copy(SMALL_SEG, d/'good.nii.gz')
    (d/'cut.nii.gz').write_bytes(SMALL_SEG.read_bytes()[:3000])          # truncated NIfTI
    np.save(d/'empty.npy', np.zeros((8, 8, 8), np.uint8))                  # empty mask
    np.save(d/'flat.npy', np.zeros((8, 8), np.uint8))                      # not 3D
    (d/'nanvert.obj').write_text('v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n')
    (d/'garbage.ply').write_bytes(b'ply\nformat binary_little_endian 1.0\nelement vertex 99\n')
    p = run_medvox('sdf', d, '--output_dir', tmp_path/'out', '--resolutions', '32', '--labels', '1')
    assert p.returncode == 2, p.stderr
    meta = pd.read_csv(tmp_path/'out'/'metadata.csv').set_index('sha256')
    assert bool(meta.loc['good_label1', 'sdf_computed'])
    for bad in ('cut', 'empty', 'flat', 'nanvert', 'garbage'):
        assert not bool(meta.loc[bad, 'sdf_computed']), bad
        assert f'{bad}' in p.stderr
    assert 'empty' in str(meta.loc['empty', 'r32_error']) + str(meta.loc['empty', 'error'])
    assert (tmp_path/'out'/'sparse_sdf'/'good_label1_r32.npz').exists()
    assert run_main('sdf', tmp_path/'nope', '--output_dir', tmp_path/'o2') == 2


def test_cli_ranks_and_workers_partition_and_agree(shared_data, tmp_path):
    src = shared_data/'ct'/'example_seg.nii.gz'
    d = tmp_path/'in'; d.mkdir()
    s, A = load_seg(src)
    import nibabel as nib
    for lab in (1, 2, 3, 5):
        nib.save(nib.Nifti1Image((s == lab).astype(np.uint8), A), str(d/f'organ{lab}.nii.gz'))
    base = ['sdf', d, '--resolutions', '32,48']
    run_medvox(*base, '--output_dir', tmp_path/'workers', '--max_workers', '2', check=0)
    one = _arrays(tmp_path/'workers')
    assert len(one) == 8
    assert run_main(*base, '--output_dir', tmp_path/'split', '--rank', '0', '--world_size', '2') == 0
    r0 = set(_arrays(tmp_path/'split'))
    assert run_main(*base, '--output_dir', tmp_path/'split', '--rank', '1', '--world_size', '2') == 0
    assert 0 < len(r0) < 8 and _arrays(tmp_path/'split') == one
    assert (tmp_path/'split'/'sparse_sdf_computed_1.csv').exists()


def test_cli_processed_ct_dataset_and_exports(tmp_path):
    raw = tmp_path/'raw'/'ds'/'case_a'; raw.mkdir(parents=True)
    shutil.copy(ROOT/'data_samples'/'ct'/'ct_small.nii.gz', raw/'ct.nii.gz')
    shutil.copy(SMALL_SEG, raw/'ct_seg.nii.gz')
    assert run_main('ct', 'preprocess', tmp_path/'raw', tmp_path/'ct', '--default_resolution', '64') == 0
    assert run_main('sdf', tmp_path/'ct', '--output_dir', tmp_path/'out', '--input_type', 'voxel', '--resolutions', '48',
                    '--labels', '5', '--fit', 'shape', '--export_vdb', '--export_mesh', 'ply') == 0
    files = sorted(f.name for f in (tmp_path/'out'/'sparse_sdf').iterdir())
    assert len(files) == 1 and files[0].endswith('_label5_r48.npz'), files
    d = C.load_sparse_sdf(tmp_path/'out'/'sparse_sdf'/files[0])
    import json
    info = json.loads(next((tmp_path/'ct').glob('*/processed/*/info.json')).read_text())
    assert np.allclose(d['affine'], info['affine'])                        # the case's voxel -> mm affine
    exp = sorted(f.name for f in (tmp_path/'out'/'exports').iterdir())
    assert exp == [files[0][:-4] + '.ply', files[0][:-4] + '.vdb']


def test_cli_seed_metadata_mode(tmp_path):
    import pandas as pd
    out = tmp_path/'out'; out.mkdir()
    s, _ = load_seg(SMALL_SEG)
    np.save(out/'a.npy', (s == 5).astype(np.uint8))
    pd.DataFrame(dict(sha256=['abc'], file_path=['a.npy'], caption=['liver'])).to_csv(out/'metadata.csv', index=False)
    run_medvox('sdf', '--output_dir', out, '--resolutions', '32', '--input_type', 'voxel', check=0)
    assert (out/'sparse_sdf'/'abc_r32.npz').exists()
    meta = pd.read_csv(out/'metadata.csv')
    assert list(meta['caption']) == ['liver'] and bool(meta['sdf_computed'][0]) and meta['r32_num_points'][0] > 0


def test_missing_kernel_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(C, '_kernel', None)
    monkeypatch.setattr(C, '_IMPORT_ERROR', 'ImportError: no module named medvox_nb._sdf')
    with pytest.raises(DependencyError, match='medvox_nb._sdf is not built.*make setup'):
        C.sparse_sdf_from_mask(np.ones((4, 4, 4), bool), 32)
    assert run_main('sdf', SMALL_SEG, '--output_dir', tmp_path/'out', '--resolutions', '32', '--labels', '5') == 2
    import pandas as pd
    assert 'medvox_nb._sdf is not built' in str(pd.read_csv(tmp_path/'out'/'metadata.csv')['r32_error'][0])
    code = ("import sys; sys.modules['medvox_nb._sdf'] = None\n"      # the module imports without its kernel
            "from medvox_nb.sdf import compute as C\nprint(C.sdf_kernel_available(), C.kernel_info()['available'])")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split() == ['False', 'False'], p.stderr
    from medvox_nb.core import native_modules                             # what medvox doctor prints
    monkeypatch.setitem(sys.modules, 'medvox_nb._sdf', None)
    assert native_modules()['medvox_nb._sdf'].startswith('missing')
