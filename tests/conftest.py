"Shared pytest fixtures: paths to the embedded samples and to ../shared/data, and a CLI runner."
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT/'data_samples'
SHARED_DATA = Path(os.environ.get('MEDVOX_SHARED_DATA', ROOT.parent/'shared'/'data'))
MEDVOX = Path(sys.executable).parent/'medvox'

@pytest.fixture(scope='session')
def samples() -> Path:
    "data_samples/ (always present in the repo)."
    return SAMPLES

@pytest.fixture(scope='session')
def shared_data() -> Path:
    "../shared/data (present in CI and on developer machines; absent on a bare clone)."
    if not SHARED_DATA.exists(): pytest.skip(f'real data folder {SHARED_DATA} not present')
    return SHARED_DATA

def run_medvox(*args, check=None, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    "Run the installed `medvox` command; returns the completed process (text stdout/stderr)."
    e = dict(os.environ, MEDVOX_PROGRESS='0', **(env or {}))
    p = subprocess.run([str(MEDVOX), *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout, cwd=cwd)
    if check is not None and p.returncode != check:
        raise AssertionError(f'medvox {" ".join(map(str, args))} -> {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}')
    return p

@pytest.fixture
def medvox():
    return run_medvox
