"The `medvox` command, the README, and the notebook test machinery itself."
import json, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, run_medvox

def test_help_lists_every_stage():
    out = run_medvox('--help', check=0).stdout
    for c in ('doctor', 'prerender', 'to-nifti', 'pointcloud', 'voxelize'): assert c in out, c

def test_doctor_reports_versions_and_native_modules():
    out = run_medvox('doctor', check=0).stdout
    for k in ('python', 'torch', 'monai', 'spconv', 'h5py', 'medvox_nb._openvdb'): assert k in out, k
    assert 'import failed' not in out, out   # every stage module imports

def test_prerender_help_has_the_seed_flags():
    out = run_medvox('prerender', '--help', check=0).stdout
    for f in ('--input-h5', '--voxel-size', '--voxelization-method', '--sigma', '--volume-dims', '--padding', '--batch-size',
              '--threshold', '--precision', '--compression', '--max-samples', '--overwrite', '--num-workers', '--shard',
              '--verify', '--config', '--set'): assert f in out, f

def test_user_error_is_one_line_and_debug_adds_traceback(tmp_path):
    cfg = tmp_path/'c.yaml'; cfg.write_text('data:\n  voxel_sise: 64\n')
    p = run_medvox('prerender', '--config', cfg, '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and p.stderr.count('\n') == 1 and 'unknown key data.voxel_sise' in p.stderr and 'valid keys' in p.stderr
    p = run_medvox('--debug', 'prerender', '--config', cfg, '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and 'Traceback' in p.stderr
    p = run_medvox('prerender', '--config', tmp_path/'missing.yaml', '--output-dir', tmp_path/'o')
    assert p.returncode == 2 and 'missing.yaml' in p.stderr

def test_readme_is_generated_from_index():
    p = subprocess.run([sys.executable, ROOT/'scripts'/'make_readme.py', '--check'], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout

def test_broken_inline_test_fails_nbdev_test(tmp_path):
    nb = json.loads((ROOT/'nbs'/'00_core.ipynb').read_text())
    nb['cells'].append(dict(cell_type='code', metadata={}, execution_count=None, outputs=[],
                            source=['from fastcore.test import test_eq\n', 'test_eq(1 + 1, 3)']))
    bad = ROOT/'nbs'/'_broken_tmp.ipynb'   # leading underscore: never exported or built into the docs
    bad.write_text(json.dumps(nb))
    try:
        p = subprocess.run([Path(sys.executable).parent/'nbdev_test', '--path', bad], capture_output=True, text=True, cwd=ROOT)
    finally: bad.unlink()
    assert p.returncode != 0 and '_broken_tmp.ipynb' in (p.stdout + p.stderr)

def test_command_modules_do_not_import_torch():
    "`medvox <cmd> --help` must not wait for torch (seconds to import): every command module imports it lazily."
    import subprocess, sys
    from medvox_nb.core import STAGES
    for name, (mod, _) in STAGES.items():
        code = f"import sys, importlib; importlib.import_module('{mod}'); heavy = [m for m in ('torch', 'monai', 'spconv') if m in sys.modules]; print(heavy)"
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        if r.returncode != 0 and 'ModuleNotFoundError' in r.stderr and mod.split('.')[1] in r.stderr: continue  # a stage not built here
        assert r.returncode == 0, (name, r.stderr[-500:])
        assert r.stdout.strip() == '[]', f'medvox {name}: importing {mod} imports {r.stdout.strip()}'

def test_every_stage_has_help_and_fails_clearly_when_unavailable(tmp_path):
    from medvox_nb.core import STAGES
    out = run_medvox('--help', check=0).stdout
    assert all(name in out for name in STAGES)
    for name in STAGES:
        r = run_medvox(name, '--help')
        assert r.returncode == 0 or (r.returncode == 2 and f'medvox {name} is unavailable' in r.stderr), (name, r.stderr)
    # a stage whose module cannot be imported says why (not argparse's "invalid choice")
    site = tmp_path/'site'; site.mkdir()
    (site/'sitecustomize.py').write_text("import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
                                         "        if name == 'h5py': raise ImportError('h5py blocked by the test')\n"
                                         "sys.meta_path.insert(0, _Block())\n")
    r = run_medvox('prerender', '--help', env={'PYTHONPATH': str(site)})
    assert r.returncode == 2 and 'medvox prerender is unavailable' in r.stderr and 'h5py' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

def test_file_system_failures_are_one_line_exit_2(tmp_path):
    "Output path is a folder / its parent is a file: one line with the path, exit 2, for a command that writes a file."
    from pathlib import Path
    (tmp_path/'afile').write_text('x')
    cloud = Path(__file__).resolve().parents[1]/'data_samples'/'smlm'/'vlume_excerpt.csv'
    for out, words in [(tmp_path, 'is a folder'), (tmp_path/'afile'/'v.npz', 'is a file')]:
        r = run_medvox('voxelize', str(cloud), '--output', str(out), '--voxel-size', '16')
        assert r.returncode == 2, (out, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr
        assert words in r.stderr, r.stderr
