"Notebooks as documents and experiments: metadata every tool needs, and a papermill run that records what ran."
import json, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

NBS = sorted((ROOT/'nbs').glob('*.ipynb'))
EXPERIMENTS = [p for p in NBS if not p.name[0].isdigit() and p.name != 'index.ipynb']

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_notebook_metadata(nb):
    md = json.loads(nb.read_text())['metadata']
    assert md['kernelspec']['name'] == 'medvox_nb' and md['kernelspec']['language'] == 'python'
    assert md['language_info']['name'] == 'python'

@pytest.mark.parametrize('nb', EXPERIMENTS, ids=lambda p: p.name)
def test_experiments_have_a_parameters_cell(nb):
    cells = json.loads(nb.read_text())['cells']
    assert sum('parameters' in c.get('metadata', {}).get('tags', []) for c in cells) == 1

def test_papermill_prerender_records_config_versions_results(samples, tmp_path):
    out = tmp_path/'run.ipynb'
    p = subprocess.run([Path(sys.executable).parent/'papermill', ROOT/'nbs'/'prerender_smlm.ipynb', out, '-k', 'python3',
                        '--cwd', ROOT/'nbs', '-p', 'output_dir', tmp_path/'store', '-p', 'voxel_size', '32',
                        '-p', 'compression', 'lzf', '--no-progress-bar'], capture_output=True, text=True,
                       env=dict(os.environ, MEDVOX_STATIC='1', MEDVOX_PROGRESS='0'))
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((tmp_path/'store'/'experiment.json').read_text())
    assert rec['config']['data']['voxel_size'] == 32 and rec['config']['prerender']['compression'] == 'lzf'
    assert rec['run_info']['torch'] and rec['run_info']['device'] and rec['results']['n_samples'] == 10
    nb = json.loads(out.read_text())
    text = json.dumps(nb)
    assert 'injected-parameters' in text and "'torch': " in text and 'image/png' in text   # params, versions and the MIP figure
