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
