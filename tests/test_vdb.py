"VDB IO: native binding, VDBGrid files, dense volumes with affines, broken files, the `medvox vdb` CLI."
import re, shutil, subprocess
import numpy as np
import pytest
from medvox_nb.core import InputError, MedvoxError, ConfigError
from medvox_nb import vdb as V

pytestmark = pytest.mark.skipif(not V.vdb_available(), reason='medvox_nb._openvdb not built')
needs_vdb_print = pytest.mark.skipif(shutil.which('vdb_print') is None, reason='vdb_print (libopenvdb-tools) not installed')


def vdb_print_grids(path) -> dict:
    "grid name -> active voxel count, parsed from OpenVDB's own `vdb_print -l`."
    out = subprocess.run(['vdb_print', '-l', str(path)], capture_output=True, text=True, check=True).stdout
    names = re.findall(r'^Name: (\S+)', out, re.M)
    counts = [int(c.replace(',', '')) for c in re.findall(r'Number of active voxels:\s+([\d,]+)', out)]
    assert len(names) == len(counts), out
    return dict(zip(names, counts))


def sort_grid(g):
    o = np.lexsort(g.coords.T[::-1])
    return g.coords[o], g.values[o]


@pytest.fixture
def grids():
    rng = np.random.default_rng(1)
    ijk = np.unique(rng.integers(-40, 40, (50000, 3)), axis=0).astype(np.int32)
    return [V.VDBGrid('density', ijk, rng.gamma(2, 3, len(ijk)).astype(np.float32), voxel_size=(64, 64, 32), origin=(-14000, -14000, -800),
                      metadata={'unit': 'nm', 'sigma': 1.5, 'n': 7, 'dims': (28000., 28000., 1600.), 'shape': (128, 128, 32), 'flag': True}),
            V.VDBGrid('rgb', ijk, rng.random((len(ijk), 3), dtype=np.float32) * 4 - 2, voxel_size=(64, 64, 32), origin=(-14000, -14000, -800))]


@needs_vdb_print
@pytest.mark.parametrize('compression', ['none', 'active_mask', 'zip', 'blosc'])
def test_float_round_trip_exact_and_vdb_print(tmp_path, grids, compression):
    if compression == 'blosc' and not V.vdb_capabilities()['blosc']: pytest.skip('no blosc')
    f = V.write_vdb(tmp_path / 'a.vdb', grids, metadata={'source': 'test', 'k': 3}, compression=compression)
    assert vdb_print_grids(f) == {'density': len(grids[0]), 'rgb': len(grids[1])}
    back = V.read_vdb(f)
    for g in grids:
        c0, v0 = sort_grid(g); c1, v1 = sort_grid(back[g.name])
        assert np.array_equal(c0, c1) and np.array_equal(v0, v1)
        assert back[g.name].info['file_compression'].startswith({'none': 'none', 'active_mask': 'active', 'zip': 'zip', 'blosc': 'blosc'}[compression])
    assert back['density'].metadata == grids[0].metadata
    assert V.read_vdb_metadata(f) == {'source': 'test', 'k': 3}


def test_half_round_trip_within_1e3_relative(tmp_path, grids):
    f = V.write_vdb(tmp_path / 'h.vdb', grids, half=True)
    back = V.read_vdb(f)
    for g in grids:
        _, v0 = sort_grid(g); _, v1 = sort_grid(back[g.name])
        assert back[g.name].half
        rel = np.abs(v1 - v0) / np.maximum(np.abs(v0), 1e-3)
        assert rel.max() <= 1e-3 and not np.array_equal(v0, v1)   # lossy, but within the bar
    assert (tmp_path / 'h.vdb').stat().st_size < 0.75 * V.write_vdb(tmp_path / 'f.vdb', grids).stat().st_size


def test_transform_maps_voxels_to_world(tmp_path, grids):
    f = V.write_vdb(tmp_path / 't.vdb', grids[0])
    g = V.read_vdb(f)['density']
    assert g.voxel_size == (64., 64., 32.) and g.origin == (-14000., -14000., -800.)
    w = g.index_to_world()
    assert np.allclose(w, g.coords * [64, 64, 32] + [-14000, -14000, -800])
    info = V.vdb_info(f)['grids']['density']
    A = np.asarray(info['affine'])
    assert np.allclose(A, [[64, 0, 0, -14000], [0, 64, 0, -14000], [0, 0, 32, -800], [0, 0, 0, 1]])


def test_general_affine_rotated(tmp_path):
    th = np.deg2rad(30)
    A = np.array([[np.cos(th) * 2, -np.sin(th) * 2, 0, 5], [np.sin(th) * 2, np.cos(th) * 2, 0, -3], [0, 0, -1.5, 7], [0, 0, 0, 1]])
    vol = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5) + 1
    f = V.save_volume_vdb(tmp_path / 'r.vdb', vol, A)
    v2, A2 = V.load_volume_vdb(f)
    assert np.array_equal(v2, vol) and np.allclose(A2, A)
    g = V.read_vdb(f)['density']
    assert np.allclose(g.index_to_world(), (A @ np.c_[g.coords, np.ones(len(g))].T).T[:, :3])


def test_volume_tolerance_and_shapes(tmp_path):
    rng = np.random.default_rng(0)
    vol = np.where(rng.random((9, 7, 5)) < 0.2, rng.random((9, 7, 5)), 0).astype(np.float32)
    vol[vol > 0] += 0.01
    for tol, expect in [(0.0, (vol != 0).sum()), (0.5, (np.abs(vol) > 0.5).sum())]:
        f = V.save_volume_vdb(tmp_path / f't{tol}.vdb', vol, np.diag([0.5, 0.5, 2, 1]), tolerance=tol)
        assert V.vdb_info(f)['grids']['density']['active_voxel_count'] == expect
        v2, _ = V.load_volume_vdb(f)
        assert v2.shape == vol.shape
        keep = np.abs(vol) > tol
        assert np.array_equal(v2[keep], vol[keep]) and (v2[~keep] == 0).all()
    # vec3 volume
    rgb = rng.random((3, 4, 5, 3)).astype(np.float32)
    v3, _ = V.load_volume_vdb(V.save_volume_vdb(tmp_path / 'rgb.vdb', rgb))
    assert np.array_equal(v3, rgb)
    # single voxel and empty
    v1, _ = V.load_volume_vdb(V.save_volume_vdb(tmp_path / 'one.vdb', np.full((1, 1, 1), 3.5)))
    assert v1.shape == (1, 1, 1) and v1[0, 0, 0] == 3.5
    ve, _ = V.load_volume_vdb(V.save_volume_vdb(tmp_path / 'e.vdb', np.zeros((7, 5, 3))))
    assert ve.shape == (7, 5, 3) and not ve.any()


@needs_vdb_print
def test_truncated_and_foreign_files_name_the_file(tmp_path, grids):
    f = V.write_vdb(tmp_path / 'ok.vdb', grids)
    raw = f.read_bytes()
    assert vdb_print_grids(f)
    for n in (0, 7, 30, 100, 400, len(raw) // 3, len(raw) - 1):
        cut = tmp_path / f'cut{n}.vdb'
        cut.write_bytes(raw[:n])
        for fn in (V.read_vdb, V.vdb_info, V.vdb_grid_names, V.load_volume_vdb):
            with pytest.raises(InputError) as e: fn(cut)
            assert f'cut{n}.vdb' in str(e.value) and ('truncated' in str(e.value) or 'not a VDB' in str(e.value)), str(e.value)
    foreign = tmp_path / 'data.vdb'
    foreign.write_bytes(b'\x89HDF\r\n\x1a\n' + bytes(4000))
    with pytest.raises(InputError, match=r'data\.vdb: cannot read VDB file: not a VDB file'): V.read_vdb(foreign)
    with pytest.raises(InputError, match='does not exist'): V.read_vdb(tmp_path / 'none.vdb')
    with pytest.raises(InputError, match="no grid named 'x'"): V.read_vdb(f, ['x'])


def test_bad_writes_leave_nothing(tmp_path, grids):
    out = tmp_path / 'bad.vdb'
    with pytest.raises(InputError, match='NaN'): V.save_volume_vdb(out, np.full((2, 2, 2), np.nan))
    with pytest.raises(InputError, match='values'): V.write_vdb(out, V.VDBGrid('a', [[0, 0, 0], [1, 1, 1]], [1.]))
    with pytest.raises(ConfigError, match='grid_class'): V.write_vdb(out, V.VDBGrid('a', [[0, 0, 0]], [1.], grid_class='smoke'))
    with pytest.raises(InputError, match='singular'): V.save_volume_vdb(out, np.ones((2, 2, 2)), np.diag([1, 0, 1, 1.]))
    assert list(tmp_path.iterdir()) == []


def test_native_module_missing_raises_dependency_error(monkeypatch):
    from medvox_nb.core import DependencyError
    monkeypatch.setattr(V, '_vdb', None)
    with pytest.raises(DependencyError, match='libopenvdb-dev libboost-dev libtbb-dev'): V.read_vdb('x.vdb')
    assert not V.vdb_available()


def test_doctor_reports_module(medvox):
    p = medvox('doctor', check=0)
    assert re.search(r'medvox_nb\._openvdb\s+ok', p.stdout), p.stdout


@needs_vdb_print
def test_cli_save_load_nifti_and_npz(tmp_path, medvox):
    nib = pytest.importorskip('nibabel')
    vol = np.zeros((7, 5, 3), np.int16); vol[2:5, 1:3, 1] = 300; vol[0, 0, 0] = -5
    aff = np.array([[-2., 0, 0, 50], [0, 2, 0, -20], [0, 0, 4, 10], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(vol, aff), tmp_path / 'ct.nii.gz')
    medvox('vdb', '--mode', 'save', '--input', tmp_path / 'ct.nii.gz', '--vdb_path', tmp_path / 'ct.vdb', check=0)
    v2, A2 = V.load_volume_vdb(tmp_path / 'ct.vdb')
    assert np.array_equal(v2, vol.astype(np.float32)) and np.allclose(A2, aff)
    assert vdb_print_grids(tmp_path / 'ct.vdb') == {'density': 7}
    np.savez(tmp_path / 'v.npz', volume=vol.astype(np.float32), affine=np.diag([3., 3, 3, 1]))
    medvox('vdb', '--mode', 'save', '--input', tmp_path / 'v.npz', '--vdb-path', tmp_path / 'v.vdb', '--half', check=0)
    assert V.vdb_info(tmp_path / 'v.vdb')['grids']['density']['half']
    p = medvox('vdb', '--mode', 'load', '--vdb_path', tmp_path / 'ct.vdb', check=0)
    assert 'grid density' in p.stdout and '7 active voxels' in p.stdout and 'shape (7, 5, 3)' in p.stdout
    p = medvox('vdb', '--mode', 'load', '--vdb_path', tmp_path / 'missing.vdb')
    assert p.returncode == 2 and 'missing.vdb' in p.stderr and 'does not exist' in p.stderr
    p = medvox('vdb', '--mode', 'optimize', '--vdb_path', tmp_path / 'ct.vdb')
    assert p.returncode == 2 and '--output_path' in p.stderr


@pytest.mark.parametrize('name', ['example_ct.nii.gz'])
def test_real_ct_round_trip(tmp_path, shared_data, name):
    nib = pytest.importorskip('nibabel')
    img = nib.load(shared_data / 'ct' / name)
    hu = np.asarray(img.dataobj, dtype=np.float32)
    f = V.save_volume_vdb(tmp_path / 'ct.vdb', hu, img.affine, background=-1024, tolerance=0, metadata={'unit': 'mm'})
    v2, A2 = V.load_volume_vdb(f)
    assert np.array_equal(v2, hu) and np.allclose(A2, img.affine)
    if shutil.which('vdb_print'):
        assert vdb_print_grids(f) == {'density': int((hu != -1024).sum())}
