"""The latent diffusion stages as a user runs them (`medvox ldm`, 32³ tiny config, simulated acquisitions): the fast
chain end to end, the latent scale factor, seeded sampling, SIGKILL and resume of either stage, and bad inputs.

Only what must be a separate process is one (the SIGKILLed run, the bad inputs' exit status): the other runs go through
`medvox_nb.core.main` in this process, so torch and MONAI are imported once (about 7 s of CPU time per process)."""
import contextlib, io, logging, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import yaml
from conftest import ROOT, MEDVOX, run_medvox

ENV = dict(MPLBACKEND='Agg', OMP_NUM_THREADS='1')   # one thread in every process: the same float sums (run_medvox adds MEDVOX_PROGRESS=0)
TINY = ROOT/'configs'/'ldm'/'ldm_tiny.yaml'

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "In-process runs use one torch thread, as the subprocesses do (OMP_NUM_THREADS=1): the same kernels, the same sums."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def medvox_here(*args) -> tuple[int, str, str]:
    "Run `medvox *args` in this process: `(exit status, stdout, stderr and the medvox log lines)`."
    from medvox_nb.core import main
    out, err = io.StringIO(), io.StringIO()
    h = logging.StreamHandler(err); logger = logging.getLogger('medvox'); logger.addHandler(h)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    finally: logger.removeHandler(h)
    return rc, out.getvalue(), err.getvalue()

def ok(*args) -> tuple[str, str]:
    rc, out, err = medvox_here(*args)
    assert rc == 0, (args, err[-3000:])
    return out, err

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "NIfTI train/ (8 volumes from 2 simulated acquisitions) and val/ (4 volumes from a third), 32³, made by the package."
    d = tmp_path_factory.mktemp('ldm_data')
    out, _ = ok('ldm', 'make-data', '--output_dir', d/'nifti', '--n-train', 2, '--n-val', 1, '--regions-per-field', 4, '--region-size', 6400, 6400, 1600)
    assert 'train and 4 val' in out
    return d/'nifti'

def write_config(tmp: Path, nifti: Path, sections: dict|None=None, name: str='ldm_config.yaml') -> Path:
    "The tiny config with every path inside `tmp`, the data in `nifti`, and `sections` (nested dicts) merged in."
    c = yaml.safe_load(TINY.read_text())
    c['data'].update(train_data_dir=str(nifti/'train'), val_data_dir=str(nifti/'val'))
    for s in ('autoencoder', 'diffusion'):
        c[s]['checkpoints']['output_dir'] = str(tmp/'outputs'/s); c[s]['logging']['log_dir'] = str(tmp/'logs'/s)
    c['diffusion']['checkpoints']['autoencoder_path'] = str(tmp/'outputs'/'autoencoder'/'best_model.pt')
    c['sampling']['output_dir'] = str(tmp/'outputs'/'samples')
    def merge(a, b):
        for k, v in b.items(): a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) else v
        return a
    merge(c, sections or {})
    tmp.mkdir(parents=True, exist_ok=True)
    p = tmp/name; p.write_text(yaml.safe_dump(c, sort_keys=False))
    return p

@pytest.fixture(scope='module')
def chain(data, tmp_path_factory):
    "The fast_dev_run chain through the CLI: autoencoder 2 batches -> diffusion 2 batches -> 1 NIfTI + 1 CSV."
    tmp = tmp_path_factory.mktemp('ldm_chain')
    cfg = write_config(tmp, data)
    t0 = time.time()
    for act in ('train-autoencoder', 'train-diffusion'): ok('ldm', act, '--config', cfg)
    ok('ldm', 'generate', '--config', cfg, '--output_dir', tmp/'outputs'/'samples')
    return dict(tmp=tmp, cfg=cfg, seconds=time.time() - t0)

def test_fast_dev_run_chain_writes_the_seed_layout(chain, data):
    import nibabel as nib
    out = chain['tmp']/'outputs'
    for s in ('autoencoder', 'diffusion'):
        assert (out/s/'latest_checkpoint.pt').is_file() and (out/s/'best_model.pt').is_file(), s
        assert any((chain['tmp']/'logs'/s).iterdir()), f'no TensorBoard events under logs/{s}'
    assert sorted(p.name for p in (out/'samples'/'nifti').iterdir()) == ['sample_0000.nii.gz']
    assert sorted(p.name for p in (out/'samples'/'pointcloud').iterdir()) == ['sample_0000.csv']
    img = nib.load(out/'samples'/'nifti'/'sample_0000.nii.gz')
    ref = nib.load(sorted((data/'train').glob('*.nii.gz'))[0])
    assert img.shape == ref.shape == (32, 32, 32)
    assert np.allclose(img.affine, ref.affine, rtol=0, atol=1e-12) and not np.allclose(img.affine, np.eye(4))
    csv = (out/'samples'/'pointcloud'/'sample_0000.csv').read_text().splitlines()
    assert csv[0] == 'x [nm],y [nm],z [nm]' and len(csv) > 1
    pts = np.loadtxt(csv[1:], delimiter=',').reshape(-1, 3)
    lo = ref.affine[:3, 3]*1e6 - np.diag(ref.affine)[:3]*1e6/2
    assert ((pts >= lo - 0.01) & (pts <= lo + np.array([6400, 6400, 1600]) + 0.01)).all()   # in nm, inside the regions' box
    print(f"fast_dev_run chain through the CLI: {chain['seconds']:.1f} s")

def test_scaled_latents_have_unit_std(chain, data, tmp_path):
    import torch
    from medvox_nb.ldm.pipeline import load_ldm_config
    from medvox_nb.ldm.diffusion import DiffusionTrainer
    cfg = load_ldm_config(write_config(tmp_path, data, {'diffusion': {'training': {'fast_dev_run': False},
                          'checkpoints': {'autoencoder_path': str(chain['tmp']/'outputs'/'autoencoder'/'best_model.pt')}}}))
    dt = DiffusionTrainer(cfg.data, cfg.diffusion, cfg.sampling, cfg.device, cfg.seed)
    dt.setup()
    # the latents the diffusion model trains on (sampled, other noise draws than the scale factor's), over every training volume
    z = []
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1234)
        for i in range(len(dt.sets.train)): z.append(dt.autoencoder.encode_stage_2_inputs(dt.sets.train[i][0][None]) * dt.scale_factor)
    std = float(torch.cat(z).std())
    assert abs(std - 1) <= 0.05, std
    assert abs(dt.scale_factor - 1) > 1e-3          # not a no-op: the raw latents do not have unit std

def test_seeded_sampling_is_deterministic(chain, tmp_path):
    from medvox_nb.ldm.pipeline import load_ldm_config
    from medvox_nb.ldm.diffusion import generate
    cfg = load_ldm_config(chain['cfg'], overrides=['sampling.sampler=ddpm', 'sampling.num_inference_steps=4', 'sampling.num_samples=2', 'sampling.batch_size=2'])
    a = generate(cfg.diffusion, cfg.sampling, cfg.device, seed=5, output_dir=tmp_path/'a')['volumes']
    b = generate(cfg.diffusion, cfg.sampling, cfg.device, seed=5, output_dir=tmp_path/'b')['volumes']
    c = generate(cfg.diffusion, cfg.sampling, cfg.device, seed=6, output_dir=tmp_path/'c')['volumes']
    assert a.shape == (2, 1, 32, 32, 32)
    assert (a == b).all() and not (a == c).all() and not (a[0] == a[1]).all()
    assert (tmp_path/'a'/'nifti'/'sample_0001.nii.gz').read_bytes() != b''

def _kill_after_first_checkpoint(cmd, ckpt: Path, timeout=300):
    p = subprocess.Popen(cmd, env=dict(os.environ, MEDVOX_PROGRESS='0', **ENV), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while not ckpt.exists():
        if p.poll() is not None: raise AssertionError(f'the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}')
        assert time.time() - t0 < timeout
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()

def _assert_same_bundle(a, b, models, optimizers):
    import torch
    A, B = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for m in models:
        for k, v in A['models'][m].items(): assert torch.equal(v, B['models'][m][k]), (m, k)
    for o in optimizers:
        sa, sb = A['misc']['optimizers'][o]['state'], B['misc']['optimizers'][o]['state']
        assert sa.keys() == sb.keys() and sa, o
        for i in sa:
            for k in ('exp_avg', 'exp_avg_sq', 'step'): assert torch.equal(sa[i][k], sb[i][k]), (o, i, k)
    for k in ('step', 'epoch', 'batch_in_epoch'): assert A['misc'][k] == B['misc'][k], k
    return A['misc'], B['misc']

@pytest.mark.parametrize('stage', ['autoencoder', 'diffusion'])
def test_sigkill_then_resume_is_bit_identical(stage, chain, data, tmp_path):
    "2 epochs of 2 steps, a checkpoint per epoch; the killed run resumes from its epoch-1 checkpoint and ends equal to the uninterrupted one."
    training = dict(fast_dev_run=False, n_epochs=2, batch_size=4, val_interval=1, save_interval=1)
    over = {stage: {'training': training}}
    if stage == 'diffusion': over['diffusion']['checkpoints'] = {'autoencoder_path': str(chain['tmp']/'outputs'/'autoencoder'/'best_model.pt')}
    act = f'train-{stage}'
    ref_cfg, kill_cfg = write_config(tmp_path/'ref', data, over), write_config(tmp_path/'killed', data, over)
    run_dir = tmp_path/'killed'/'outputs'/stage
    _kill_after_first_checkpoint([str(MEDVOX), 'ldm', act, '--config', str(kill_cfg)], run_dir/'latest_checkpoint.pt')
    import torch
    assert torch.load(run_dir/'latest_checkpoint.pt', weights_only=True)['misc']['step'] < 4      # killed before the end
    ok('ldm', act, '--config', ref_cfg)                                                           # the uninterrupted run
    _, err = ok('ldm', act, '--config', kill_cfg, '--set', f'{stage}.checkpoints.resume_from={run_dir/"latest_checkpoint.pt"}')
    assert 'resumed from' in err
    models, opts = (('autoencoder', 'discriminator'), ('g', 'd')) if stage == 'autoencoder' else (('unet',), ('main',))
    a, b = _assert_same_bundle(tmp_path/'ref'/'outputs'/stage/'latest_checkpoint.pt', run_dir/'latest_checkpoint.pt', models, opts)
    assert a['step'] == 4 and a['epoch'] == b['epoch']
    key = 'intensity_scale' if stage == 'autoencoder' else 'scale_factor'
    assert a['extra'][key] == b['extra'][key] and a['extra'][key] > 0

BAD = {
    'empty train folder': (lambda t, d: {'data': {'train_data_dir': str(t/'empty')}}, 'train-autoencoder', 'no NIfTI volumes'),
    'val volumes of another shape': (lambda t, d: {'data': {'val_data_dir': str(t/'small')}}, 'train-autoencoder', 'does not match the training volumes'),
    'volumes of different shapes': (lambda t, d: {'data': {'train_data_dir': str(t/'mixed')}}, 'train-autoencoder', 'differs from (32, 32, 32)'),
    'unreadable volume': (lambda t, d: {'data': {'train_data_dir': str(t/'broken')}}, 'train-autoencoder', 'cannot read NIfTI'),
    'diffusion without an autoencoder': (lambda t, d: {'diffusion': {'checkpoints': {'autoencoder_path': str(t/'none.pt')}}}, 'train-diffusion', 'no autoencoder checkpoint'),
    'unknown key': (lambda t, d: {'autoencoder': {'training': {'n_epoch': 3}}}, 'train-autoencoder', 'unknown key autoencoder.training.n_epoch'),
    'perceptual loss without weights': (lambda t, d: {'autoencoder': {'training': {'use_perceptual_loss': True}}}, 'train-autoencoder', 'needs perceptual_weights_path'),
    'generate without a diffusion model': (lambda t, d: {}, 'generate', 'no diffusion checkpoint'),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_inputs_are_one_line_and_write_nothing(case, data, tmp_path):
    import nibabel as nib, shutil
    (tmp_path/'empty').mkdir()
    ref = nib.load(sorted((data/'train').glob('*.nii.gz'))[0])
    for name, shape in (('small', (32, 32, 16)), ('mixed', (32, 32, 16))):
        (tmp_path/name).mkdir()
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), ref.affine), tmp_path/name/'v.nii.gz')
    for p in sorted((data/'train').glob('*.nii.gz'))[:2]: shutil.copy(p, tmp_path/'mixed')
    (tmp_path/'broken').mkdir(); (tmp_path/'broken'/'v.nii.gz').write_bytes(b'not a nifti file')
    sections, act, words = BAD[case]
    cfg = write_config(tmp_path, data, sections(tmp_path, data))
    r = run_medvox('ldm', act, '--config', cfg, env=ENV)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert words in r.stderr and r.stderr.strip().count('\n') == 0, r.stderr
    assert not (tmp_path/'outputs').exists() and not (tmp_path/'logs').exists()
