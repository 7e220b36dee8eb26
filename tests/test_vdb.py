"VDB IO: native binding, VDBGrid files, dense volumes with their full affine, level sets, broken files, the `medvox vdb` CLI."
import ast, json, re, shutil, subprocess, sys
from pathlib import Path
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
    return [V.VDBGrid('density', ijk, rng.gamma(2, 3, len(ijk)).astype(np.float32), spacing=(64, 64, 32), origin=(-14000, -14000, -800),
                      metadata={'unit': 'nm', 'sigma': 1.5, 'n': 7, 'dims': (28000., 28000., 1600.), 'shape': (128, 128, 32), 'flag': True}),
            V.VDBGrid('rgb', ijk, rng.random((len(ijk), 3), dtype=np.float32) * 4 - 2, spacing=(64, 64, 32), origin=(-14000, -14000, -800))]


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
    assert g.spacing == (64., 64., 32.) and g.origin == (-14000., -14000., -800.)
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
    assert np.array_equal(v2, vol) and np.array_equal(A2, A)
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
    assert np.array_equal(v2, hu) and np.array_equal(A2, img.affine)
    if shutil.which('vdb_print'):
        assert vdb_print_grids(f) == {'density': int((hu != -1024).sum())}


# ---------------------------------------------------------------- issue 6: module seams and names
def test_vdb_module_knows_nothing_of_plenoxels_and_neuralvdb_uses_public_api_only():
    "No import loop: medvox_nb.vdb imports neither neuralvdb nor plenoxels (nor torch); neuralvdb touches no private name of vdb."
    code = ("import sys, medvox_nb.vdb; bad = [m for m in ('medvox_nb.neuralvdb', 'medvox_nb.plenoxels', 'torch') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    for node in ast.walk(ast.parse(Path(V.__file__).read_text())):       # not even a lazy import inside a function
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ''] if isinstance(node, ast.ImportFrom) else []
        names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
        assert not any('neuralvdb' in m or 'plenoxel' in m for m in mods + names), ast.dump(node)
    nv = ast.parse(Path(V.__file__).with_name('neuralvdb.py').read_text())
    for node in ast.walk(nv):
        if isinstance(node, ast.ImportFrom) and node.module in ('medvox_nb.vdb', 'vdb'):
            assert not [a.name for a in node.names if a.name.startswith('_')], ast.dump(node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ('_v', 'V', 'vdb'):
            assert not node.attr.startswith('_'), f'neuralvdb uses {node.value.id}.{node.attr}'


def test_codec_registry_is_not_called_like_the_hdf5_one():
    from medvox_nb import prerender
    assert not hasattr(V, 'COMPRESSIONS') and V.VDB_CODECS == ('none', 'active_mask', 'zip', 'blosc')
    assert set(prerender.COMPRESSIONS) != set(V.VDB_CODECS)
    with pytest.raises(ConfigError, match="'gzip' is not a VDB codec"): V.write_vdb('x.vdb', V.VDBGrid('a', [[0, 0, 0]], [1.]), compression='gzip')


def test_grid_spacing_name_and_validation(tmp_path):
    g = V.VDBGrid('a', [[0, 0, 0]], [1.], spacing=(0.5, 1, 2))
    assert g.spacing == (0.5, 1., 2.) and not hasattr(g, 'voxel_size')
    for bad in (0, -1, (1, 0, 1), float('inf')):
        with pytest.raises(ConfigError, match='spacing must be 1 or 3 numbers > 0'):
            V.write_vdb(tmp_path / 'a.vdb', V.VDBGrid('a', [[0, 0, 0]], [1.], spacing=bad))
    assert V.vdb_info(V.write_vdb(tmp_path / 'b.vdb', g))['grids']['a']['spacing'] == (0.5, 1., 2.)


# ---------------------------------------------------------------- issue 6 item 5: orientation
def vdb_print_matrix(path) -> np.ndarray:
    "The index-to-world matrix as OpenVDB's vdb_print shows it, transposed back to the column-vector convention."
    if shutil.which('vdb_print') is None: pytest.skip('vdb_print not installed')
    out = subprocess.run(['vdb_print', '-l', str(path)], capture_output=True, text=True, check=True).stdout
    rows = re.findall(r'^\s+\[([-\d.e, ]+)\]\s*$', out[out.index('index to world'):], re.M)[:4]
    return np.array([[float(x) for x in r.split(',')] for r in rows]).T


@pytest.fixture
def mr_nifti(tmp_path, shared_data):
    "The real CT crop of ../shared/data with an MR-like header: x and y flipped, diag(-3, -3, 3)."
    nib = pytest.importorskip('nibabel')
    img = nib.load(shared_data / 'ct' / 'example_ct_sm.nii.gz')
    A = img.affine.copy(); A[0, 0], A[1, 1] = -3, -3
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), A), tmp_path / 'mr.nii.gz')
    return tmp_path / 'mr.nii.gz'


@pytest.mark.parametrize('kind', ['mr', 'oblique', 'sheared'])
def test_full_affine_kept_exactly_and_shown_by_vdb_print(tmp_path, kind):
    from scipy.spatial.transform import Rotation
    A = np.eye(4); A[:3, 3] = [120.3, -90.7, 40.1]
    if kind == 'mr': A[:3, :3] = np.diag([-0.8, -0.8, 3.0])
    elif kind == 'oblique': A[:3, :3] = Rotation.from_euler('zyx', [30, -12, 7], degrees=True).as_matrix() @ np.diag([0.7, 0.7, 2.5])
    else: A[:3, :3] = [[1, 0.3, 0], [0, 1, 0.2], [0, 0, 1.5]]
    vol = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    f = V.save_volume_vdb(tmp_path / f'{kind}.vdb', vol, A)
    v2, A2 = V.load_volume_vdb(f)
    assert np.array_equal(v2, vol) and np.array_equal(A2, A), A2 - A     # bit for bit, not merely close
    assert np.allclose(vdb_print_matrix(f), A, rtol=5e-3, atol=6e-3)    # OpenVDB's own reading (printed with 3 digits)
    g = V.read_vdb(f)['density']
    assert np.array_equal(g.to_affine(), A)
    assert np.array_equal(V.read_vdb(V.write_vdb(tmp_path / 'g.vdb', g))['density'].to_affine(), A)


def test_cli_save_mr_with_spacing_keeps_the_flips(tmp_path, medvox, mr_nifti):
    "Regression: `--voxel-size 3` on an MR with diag(-3,-3,3) wrote diag(3,3,3), mirroring x and y."
    nib = pytest.importorskip('nibabel')
    A = nib.load(mr_nifti).affine
    for extra in ([], ['--spacing', '3']):
        out = tmp_path / f'mr{len(extra)}.vdb'
        medvox('vdb', '--mode', 'save', '--input', mr_nifti, '--vdb_path', out, *extra, check=0)
        assert np.array_equal(V.load_volume_vdb(out)[1], A)
        M = vdb_print_matrix(out)
        assert M[0, 0] == -3 and M[1, 1] == -3 and M[2, 2] == 3
    medvox('vdb', '--mode', 'save', '--input', mr_nifti, '--vdb_path', tmp_path / 'mr2.vdb', '--spacing', '2', '2', '4', check=0)
    assert np.array_equal(np.diag(V.load_volume_vdb(tmp_path / 'mr2.vdb')[1]), [-2, -2, 4, 1])


@pytest.mark.parametrize('args', [['--spacing', '-1'], ['--spacing', '0'], ['--spacing', '1', '2'], ['--voxel-size', '3']])
def test_cli_bad_spacing_is_one_line_naming_the_option(tmp_path, medvox, args):
    np.save(tmp_path / 'v.npy', np.ones((3, 3, 3), np.float32))
    p = medvox('vdb', '--mode', 'save', '--input', tmp_path / 'v.npy', '--vdb_path', tmp_path / 'out.vdb', *args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert ('--spacing must be 1 or 3 numbers > 0' in p.stderr or 'is now --spacing' in p.stderr) and 'out.vdb' not in p.stderr, p.stderr
    assert not (tmp_path / 'out.vdb').exists()


def test_cli_load_output_converts_back_to_nifti(tmp_path, medvox, mr_nifti):
    nib = pytest.importorskip('nibabel')
    src = nib.load(mr_nifti)
    medvox('vdb', '--mode', 'save', '--input', mr_nifti, '--vdb_path', tmp_path / 'mr.vdb', '--background', '-1024', check=0)
    p = medvox('vdb', '--mode', 'load', '--vdb_path', tmp_path / 'mr.vdb', '--output', tmp_path / 'back.nii.gz', check=0)
    assert 'back.nii.gz' in p.stdout
    back = nib.load(tmp_path / 'back.nii.gz')
    assert np.array_equal(back.affine, src.affine) and back.get_data_dtype() == src.get_data_dtype()
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(src.dataobj))
    medvox('vdb', '--mode', 'load', '--vdb_path', tmp_path / 'mr.vdb', '--output', tmp_path / 'back.npz', check=0)
    with np.load(tmp_path / 'back.npz') as z: assert np.array_equal(z['affine'], src.affine)
    p = medvox('vdb', '--mode', 'load', '--vdb_path', tmp_path / 'mr.vdb', '--output', tmp_path / 'back.png')
    assert p.returncode == 2 and '.nii, .nii.gz or .npz' in p.stderr


def test_cli_optimize_is_lossless_unless_half_is_asked(tmp_path, medvox, grids):
    "Regression: `medvox vdb --mode optimize` stored half floats and dropped small values by default."
    src = V.write_vdb(tmp_path / 'raw.vdb', grids, compression='none')
    p = medvox('vdb', '--mode', 'optimize', '--vdb_path', src, '--output_path', tmp_path / 'opt.vdb', check=0)
    rep = json.loads(p.stdout)
    assert rep['size_after_bytes'] < rep['size_before_bytes'] and rep['grids_after'] == rep['grids_before']
    back = V.read_vdb(tmp_path / 'opt.vdb')
    for g in grids:
        assert not back[g.name].half
        c0, v0 = sort_grid(g); c1, v1 = sort_grid(back[g.name])
        assert np.array_equal(c0, c1) and np.array_equal(v0, v1)
    medvox('vdb', '--mode', 'optimize', '--vdb_path', src, '--output_path', tmp_path / 'half.vdb', '--half', check=0)
    h = V.read_vdb(tmp_path / 'half.vdb')['density']
    assert h.half and not np.array_equal(sort_grid(h)[1], sort_grid(grids[0])[1])
    p = medvox('vdb', '--mode', 'optimize', '--vdb_path', src, '--output_path', tmp_path / 'tol.vdb', '--tolerance', '3', check=0)
    assert json.loads(p.stdout)['grids_after']['density'] == int((np.abs(grids[0].values) > 3).sum())


def test_grid_builder_equals_arrays(tmp_path, grids):
    g = grids[0]
    b = V.GridBuilder('density', spacing=g.spacing, origin=g.origin, metadata=g.metadata)
    for part in np.array_split(np.arange(len(g)), 5): b.add(g.coords[part], g.values[part])
    f = V.write_vdb(tmp_path / 'b.vdb', b.prune())
    c0, v0 = sort_grid(g); c1, v1 = sort_grid(V.read_vdb(f)['density'])
    assert np.array_equal(c0, c1) and np.array_equal(v0, v1)
    with pytest.raises(InputError, match='NaN'): V.GridBuilder('x').add([[0, 0, 0]], [np.nan])


# ---------------------------------------------------------------- issue 7 need: level sets
def sphere_band(r=9.0, h=0.5, half_width_voxels=3.5, n=16):
    ijk = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing='ij'), -1).reshape(-1, 3)
    d = (np.linalg.norm(ijk, axis=1) - r) * h
    bw = half_width_voxels * h
    keep = np.abs(d) < bw
    return ijk[keep].astype(np.int32), d[keep].astype(np.float32), bw


@needs_vdb_print
def test_level_set_is_a_level_set_for_openvdb(tmp_path):
    from scipy.spatial.transform import Rotation
    coords, values, bw = sphere_band()
    A = np.eye(4); A[:3, :3] = Rotation.from_euler('xyz', [10, 20, 30], degrees=True).as_matrix() * 0.5; A[:3, 3] = [-12, 3, 40]
    f = V.write_level_set(tmp_path / 'sphere.vdb', coords, values, A, background=bw, metadata={'unit': 'mm'}, file_metadata={'source': 'test'})
    out = subprocess.run(['vdb_print', '-l', str(f)], capture_output=True, text=True, check=True).stdout
    assert 'class: level set' in out and re.search(r'Background value:\s+1\.75\b', out), out
    assert vdb_print_grids(f) == {'surface': len(coords)}
    assert V.check_level_set(f) == '' and V.check_level_set(f, 'surface', checks=9) == ''
    g = V.read_vdb(f)['surface']
    assert g.grid_class == 'level_set' and g.background == bw and np.array_equal(g.to_affine(), A)
    c0 = np.lexsort(coords.T[::-1]); c1, v1 = sort_grid(g)
    assert np.array_equal(c1, coords[c0]) and np.array_equal(v1, values[c0])
    dense, _ = V.load_volume_vdb(f)
    lo = np.asarray(g.info['bbox'][0])
    assert dense[tuple(-lo)] == -bw and dense[0, 0, 0] == bw             # inside -background, outside +background
    assert V.check_level_set(V.save_volume_vdb(tmp_path / 'fog.vdb', np.ones((2, 2, 2)))).startswith('Class type')


@pytest.mark.parametrize('change,msg', [
    (dict(values=lambda v: v * 4), 'within +-background'), (dict(background=lambda b: -b), 'must be > 0'),
    (dict(affine=lambda A: np.diag([0.5, 0.5, 1.0, 1.0])), 'cubic voxels'), (dict(coords=lambda c: c[:, :2]), '(N, 3) integers'),
    (dict(values=lambda v: np.where(np.arange(len(v)) == 3, np.nan, v)), 'NaN')])
def test_level_set_bad_input(tmp_path, change, msg):
    coords, values, bw = sphere_band(n=10, r=6)
    kw = dict(coords=coords, values=values, affine=np.diag([0.5, 0.5, 0.5, 1.0]), background=bw)
    for k, f in change.items(): kw[k] = f(kw[k])
    with pytest.raises(InputError, match=re.escape(msg)): V.write_level_set(tmp_path / 'x.vdb', **kw)
    assert not (tmp_path / 'x.vdb').exists()
