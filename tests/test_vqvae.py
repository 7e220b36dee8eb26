"""The sparse SDF VQ-VAE: sparse convolutions against dense conv3d (spconv with its CPU shims, and pure torch), the model,
the two training stages through `medvox train-vqvae` (stage 1 leaves encoder and decoder bit for bit unchanged), SIGKILL
then resume bit-identical, 2-process DDP equal to 1 process, bad inputs (one line, exit 2, nothing written), papermill."""
import hashlib, json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import ROOT, run_medvox
from medvox_nb.vqvae import model as vm

EXTRA = dict(OMP_NUM_THREADS='1', MPLBACKEND='Agg')                # what run_medvox adds to the environment
ENV = dict(os.environ, MEDVOX_PROGRESS='0', **EXTRA)
HAS_SPCONV = vm.resolve_backend('auto') == 'spconv'
BACKENDS = ['torch'] + (['spconv'] if HAS_SPCONV else [])


def tiny_config(stage=1, resolution=32, dataset='SparseSDF', backend='torch', **trainer):
    "A model and run small enough for tests (32³, one transformer block, 64 codes); the pure-torch convolutions are the faster on CPU."
    args = dict(training_stage=stage, max_steps=4, batch_size_per_gpu=2, i_print=1, i_log=1, i_save=2, i_sample=0,
                val_max_samples=2, val_chamfer=False, kmeans_init_samples=4, device='cpu', num_samples_to_show=2,
                optimizer=dict(name='AdamW', args=dict(lr=1e-3 if stage == 1 else 5e-3)), loss_type='l1' if stage == 1 else 'l1_l2')
    if stage == 2: args['lr_scheduler'] = dict(name='ExponentialLR', args=dict(gamma=0.99))
    args.update(trainer)
    return dict(models=dict(vqvae=dict(name='Direct3DS2_VQVAE', args=dict(resolution=resolution, model_channels=32, latent_channels=8,
                num_blocks=1, num_embeddings=64, num_head_channels=16, attn_mode='swin', window_size=4, io_channels=[8, 16],
                num_io_res_blocks=[0, 1], sparse_backend=backend, reservoir_size=512, reservoir_per_sample=16, kmeans_interval=3))),
                dataset=dict(name=dataset, args=dict(resolution=resolution, min_points=50, val_instances=['*_val*'], num_samples=6)),
                trainer=dict(name='SparseSDF_VQVAETrainer', args=args))


def medvox_here(*args) -> tuple[int, str]:
    "Run `medvox args` in this process (no second start of torch): (exit status, what it wrote to stderr, log lines included)."
    import contextlib, io, logging
    from medvox_nb.core import main, get_logger
    err = io.StringIO()
    get_logger(); hs = logging.getLogger('medvox').handlers
    old = [h.setStream(err) for h in hs]
    try:
        with contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    finally:
        for h, o in zip(hs, old): h.setStream(o)
    return rc, err.getvalue()


def write_config(path, cfg) -> Path:
    Path(path).write_text(json.dumps(cfg)); return Path(path)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory) -> Path:
    "Sparse SDF .npz files of toy shapes at 32³ (6 for training, 2 held out), as medvox sdf writes them."
    from medvox_nb.sdf.compute import save_sparse_sdf
    d = tmp_path_factory.mktemp('shapes')
    for i in range(8):
        kind = ('sphere', 'torus', 'box')[i % 3]
        s = vm.toy_shape(kind, 32, 2.0, size=0.3 if kind != 'torus' else 0.25, seed=i)
        save_sparse_sdf(d/f"{kind}{'_val' if i >= 6 else ''}{i}_r32.npz", s)
    return d


def weights(run, step, name='vqvae') -> dict:
    return torch.load(Path(run)/'ckpts'/f'{name}_step{step:07d}.pt', weights_only=True)


def digest(sd: dict, keep) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        if keep(k): h.update(k.encode()); h.update(sd[k].cpu().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- sparse convolutions

@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('layer', ['SubMConv3d', 'SparseDownConv3d', 'SparseSubdivideConv3d'])
def test_sparse_convolution_equals_dense_conv3d_with_feature_and_weight_gradients(backend, layer):
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        occ = torch.rand(2, 8, 8, 8, generator=g) < 0.3
        coords = occ.nonzero().int()                               # column-major, as torch returns it
        x = vm.SparseTensor(torch.randn(len(coords), 5, generator=g), coords, 8, 2)
        torch.manual_seed(seed)
        conv = getattr(vm, layer)(5, 7, backend=backend)
        err = vm.check_against_dense(conv, x, seed)
        assert max(err['out'], err['feats'], err['weight'], err['bias']) < 1e-5, err


@pytest.mark.skipif(not HAS_SPCONV, reason='spconv not installed')
def test_spconv_without_the_shims_is_wrong_on_cpu_and_right_with_them():
    sp = vm.load_spconv()
    g = torch.Generator().manual_seed(0)
    coords = (torch.rand(2, 8, 8, 8, generator=g) < 0.3).nonzero().int()
    f = torch.randn(len(coords), 3, generator=g)
    ref = vm.SubMConv3d(3, 4, bias=False)
    conv = sp.SubMConv3d(3, 4, 3, bias=False); conv.weight.data.copy_(ref.weight.data)
    expect = ref(vm.SparseTensor(f, coords, 8, 2)).feats.detach()
    raw = object.__new__(sp.SparseConvTensor)
    sp.SparseConvTensor.__init__.__wrapped__(raw, f, coords, [8] * 3, 2)         # spconv's own constructor: column-major indices
    with torch.no_grad():
        assert (conv(raw).features - expect).abs().max() > 0.1 * expect.abs().max()
        for _ in range(5):                                                     # the scatter-add race would show as run-to-run differences
            assert (conv(sp.SparseConvTensor(f, coords, [8] * 3, 2)).features - expect).abs().max() < 1e-5 * expect.abs().max()


# ---------------------------------------------------------------- model

def test_encode_indices_and_decode_to_the_band():
    torch.manual_seed(0)
    m = vm.SparseSDFVQVAE(resolution=32, model_channels=32, latent_channels=8, num_blocks=2, num_embeddings=64, num_head_channels=16,
                          window_size=4, io_channels=(8, 16), sparse_backend='torch', vq_group_size=4)
    x = vm.as_sparse_tensor(vm.collate_sparse_sdf([vm.toy_shape('sphere', 32), vm.toy_shape('torus', 32)]))
    idx = m.Encode(x)
    assert idx.resolution == 8 and idx.feats.dtype == torch.int64 and idx.feats.shape[1] == 2 and int(idx.feats.max()) < 64
    y = m.Decode(idx)
    assert y.resolution == 32 and (y.lookup(x.coords) >= 0).all() and y.feats.abs().max() <= 1
    assert m.state_dict()['vq.embeddings.weight'].shape == (64, 4)
    assert vm.Direct3DS2_VQVAE is vm.SparseSDFVQVAE


def test_band_targets_give_the_clamped_field_beyond_the_band():
    s = vm.toy_shape('torus', 32, 2.0)
    gt = vm.as_sparse_tensor(vm.collate_sparse_sdf([s]))
    allc = torch.cat([torch.zeros(32 ** 3, 1, dtype=torch.int32), torch.from_numpy(np.argwhere(np.ones((32,) * 3)).astype(np.int32))], 1)
    t, hit = vm.band_targets(allc, gt)
    g = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing='ij'), -1) - 15.5
    q = np.stack([np.linalg.norm(g[..., :2], axis=-1) - 0.3 * 32, g[..., 2]], -1)
    exact = np.clip((np.linalg.norm(q, axis=-1) - 0.1 * 32) / 2.0, -1, 1).reshape(-1)
    np.testing.assert_allclose(t.numpy(), exact, atol=1e-6)
    assert int(hit.sum()) == len(s['sparse_index'])


def test_pretrained_weights_report_missing_unexpected_reshaped(tmp_path):
    kw = dict(resolution=32, model_channels=32, latent_channels=8, num_blocks=1, num_embeddings=64, num_head_channels=16, window_size=4,
              io_channels=(8, 16), sparse_backend='torch')
    torch.manual_seed(0); src = vm.SparseSDFVQVAE(**kw)
    sd = {'module.' + k.replace('Decoder.', 'decoder.'): v for k, v in src.state_dict().items() if k != 'vq.embeddings.weight'}
    sd['module.Encoder.out_layer.weight'] = torch.cat([sd['module.Encoder.out_layer.weight'], torch.randn(8, 32)])   # a KL head
    sd['module.extra.weight'] = torch.zeros(3)
    torch.save({'state_dict': sd}, tmp_path/'w.pth')
    torch.manual_seed(1); dst = vm.SparseSDFVQVAE(**kw)
    rep = vm.load_pretrained(dst, tmp_path/'w.pth')
    assert rep['missing'] == ['vq.embeddings.weight'] and rep['unexpected'] == ['extra.weight'] and len(rep['reshaped']) == 1
    for k, v in src.state_dict().items():
        if k != 'vq.embeddings.weight': assert torch.equal(v, dst.state_dict()[k]), k


# ---------------------------------------------------------------- training stages through the command

def test_stage1_leaves_encoder_and_decoder_unchanged_and_stage2_starts_from_it(tmp_path, shapes):
    from medvox_nb.vqvae.train import VQVAEConfig, SparseSDFVQVAETrainer
    c1 = write_config(tmp_path/'s1.json', tiny_config(1))
    init = SparseSDFVQVAETrainer(VQVAEConfig.load(c1), tmp_path/'never', shapes, seed=0).vqvae.state_dict()   # what stage 1 starts from
    rc, err = medvox_here('train-vqvae', '--config', c1, '--output_dir', tmp_path/'s1', '--data_dir', shapes)
    assert rc == 0, err[-3000:]
    frozen = lambda k: not k.startswith('vq.')
    end = weights(tmp_path/'s1', 4)
    assert digest(end, frozen) == digest(init, frozen)                       # encoder and decoder: bit for bit
    assert not torch.equal(end['vq.embeddings.weight'], init['vq.embeddings.weight'])
    rows = [l.split() for l in (tmp_path/'s1'/'vqvae_model_summary.txt').read_text().splitlines() if l.startswith(('Encoder.', 'Decoder.', 'vq.'))]
    assert {r[-1] for r in rows if not r[0].startswith('vq.')} == {'False'} and [r[-1] for r in rows if r[0] == 'vq.embeddings.weight'] == ['True']
    assert '[Stage 1]' in err and 'Step 4: loss=' in err and ' recon=' in err and ' vq=' in err and ' commitment=' in err
    assert list((tmp_path/'s1'/'samples').glob('step*.png')) and list((tmp_path/'s1'/'tb_logs').iterdir())
    assert 'codebook perplexity=' in err
    # stage 2 from stage 1, the seed's way: --load_dir <stage 1 run> --ckpt latest
    c2 = write_config(tmp_path/'s2.json', tiny_config(2))
    rc, err = medvox_here('train-vqvae', '--config', c2, '--output_dir', tmp_path/'s2', '--data_dir', shapes, '--load_dir', tmp_path/'s1', '--ckpt', 'latest')
    assert rc == 0, err[-3000:]
    assert '[Stage 2] Joint training' in err and 'Initialised from' in err
    s2 = weights(tmp_path/'s2', 4)
    assert digest(s2, frozen) != digest(end, frozen)
    cfg = json.loads((tmp_path/'s2'/'config.json').read_text())
    assert cfg['trainer']['args']['training_stage'] == 2 and cfg['run']['init_from'].endswith('vqvae_step0000004.pt')


def test_sigkill_then_resume_is_bit_identical(tmp_path, shapes):
    cfg = write_config(tmp_path/'c.json', tiny_config(2, backend='auto', init_from='scratch', max_steps=6, i_save=2, ema_rate=[0.9]))   # spconv where installed
    args = ['train-vqvae', '--config', str(cfg), '--data_dir', str(shapes)]
    r = run_medvox(*args, '--output_dir', tmp_path/'ref', env=EXTRA)
    assert r.returncode == 0, r.stderr[-3000:]
    killed = tmp_path/'killed'
    p = subprocess.Popen([str(ROOT/'.venv'/'bin'/'medvox') if (ROOT/'.venv'/'bin'/'medvox').exists() else 'medvox', *args, '--output_dir', str(killed)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (killed/'ckpts'/'misc_step0000002.pt').exists():
        assert p.poll() is None and time.time() - t0 < 300, 'the run ended before it could be killed'
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (killed/'ckpts'/'misc_step0000006.pt').exists()
    r = run_medvox(*args, '--output_dir', killed, env=EXTRA)                  # the same command again: --load_dir defaults to --output_dir
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Loading checkpoint from step' in r.stderr
    for name in ('vqvae', 'vqvae_ema0.9'):
        a, b = weights(tmp_path/'ref', 6, name), weights(killed, 6, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ma, mb = weights(tmp_path/'ref', 6, 'misc'), weights(killed, 6, 'misc')
    sa, sb = ma['optimizers']['main']['state'], mb['optimizers']['main']['state']
    assert all(torch.equal(sa[i]['exp_avg_sq'], sb[i]['exp_avg_sq']) for i in sa)
    assert torch.equal(ma['extra']['vq']['reservoir'], mb['extra']['vq']['reservoir']) and torch.equal(ma['extra']['epoch_counts'], mb['extra']['epoch_counts'])
    assert ma['schedulers'] == mb['schedulers']


def test_ddp_two_processes_equal_one_process(tmp_path, shapes):
    """2 processes with 2 shapes each equal 1 process with the 4 shapes: data split, gradient all-reduce, codebook
    initialisation, reservoir, usage counts and dead-code re-initialisation (at step 3) all agree. SGD: Adam divides by
    the gradient's size, so parameters whose gradient is zero in exact arithmetic (the attention's key bias) move by
    rounding noise, in one process as in two (see benchmarks/vqvae.md)."""
    sgd = dict(name='SGD', args=dict(lr=0.05, momentum=0.9))
    one = write_config(tmp_path/'one.json', tiny_config(2, init_from='scratch', max_steps=3, i_save=3, batch_size_per_gpu=4, optimizer=sgd))
    two = write_config(tmp_path/'two.json', tiny_config(2, init_from='scratch', max_steps=3, i_save=3, batch_size_per_gpu=2, optimizer=sgd))
    r = run_medvox('train-vqvae', '--config', one, '--output_dir', tmp_path/'one', '--data_dir', shapes, env=EXTRA)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_medvox('train-vqvae', '--config', two, '--output_dir', tmp_path/'two', '--data_dir', shapes, '--num_gpus', 2,
                   '--master_port', 29561, env=EXTRA)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = weights(tmp_path/'one', 3), weights(tmp_path/'two', 3)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-6, diff
    ma, mb = weights(tmp_path/'one', 3, 'misc'), weights(tmp_path/'two', 3, 'misc')
    assert (ma['extra']['vq']['reservoir'] - mb['extra']['vq']['reservoir']).abs().max() <= 1e-5
    assert json.loads((tmp_path/'two'/'config.json').read_text())['run']['world_size'] == 2
    from medvox_nb.vqvae.train import VQVAEConfig, SparseSDFVQVAETrainer
    init = SparseSDFVQVAETrainer(VQVAEConfig.load(one), tmp_path/'never', shapes, seed=0).vqvae.state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a if not k.startswith('vq.')) > 1e-3    # it trained


def test_a_shape_is_encoded_the_same_whatever_else_is_in_its_batch():
    "spconv orders its output voxels by hashing; the model puts them in a fixed order, so batches do not change results."
    shapes = [vm.toy_shape(k, 32, seed=i) for i, k in enumerate(('sphere', 'torus', 'box'))]
    for backend in BACKENDS:
        torch.manual_seed(0)
        m = vm.SparseSDFVQVAE(resolution=32, model_channels=32, latent_channels=8, num_blocks=1, num_embeddings=64, num_head_channels=16,
                              window_size=4, io_channels=(8, 16), sparse_backend=backend).eval()
        with torch.no_grad():
            both = m.encode(vm.as_sparse_tensor(vm.collate_sparse_sdf(shapes)))
            alone = m.encode(vm.as_sparse_tensor(vm.collate_sparse_sdf(shapes[1:2])))
        rows = both.coords[:, 0] == 1
        assert torch.equal(both.coords[rows, 1:], alone.coords[:, 1:]), backend
        torch.testing.assert_close(both.feats[rows], alone.feats, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- bad inputs

def _fails(tmp_path, *args):
    "Run the command in this process; returns (status, stderr lines) and checks that no output folder appeared."
    rc, err = medvox_here('train-vqvae', *args, '--output_dir', tmp_path/'out')
    assert not (tmp_path/'out').exists()
    return rc, [l for l in err.splitlines() if 'error' in l]


def test_bad_inputs_are_one_line_exit_2_and_write_nothing(tmp_path, shapes):
    from medvox_nb.sdf.compute import save_sparse_sdf
    c1 = write_config(tmp_path/'c1.json', tiny_config(1))
    # every shape smaller than min_points
    small = tmp_path/'small'; small.mkdir()
    for i in range(3): save_sparse_sdf(small/f'dot{i}_r32.npz', dict(sparse_index=np.array([[5, 5, 5 + i]], np.int32), sparse_sdf=np.array([[-0.5]], np.float32), resolution=32))
    rc, err = _fails(tmp_path, '--config', c1, '--data_dir', small)
    assert rc == 2 and len(err) == 1 and 'no sparse SDF' in err[0] and 'at least 50 points' in err[0], err
    # an empty folder
    empty = tmp_path/'empty'; empty.mkdir()
    rc, err = _fails(tmp_path, '--config', c1, '--data_dir', empty)
    assert rc == 2 and len(err) == 1, err
    # a .npz with the wrong keys
    bad = tmp_path/'bad'; bad.mkdir()
    np.savez(bad/'organ_r32.npz', points=np.zeros((200, 3)), values=np.zeros(200))
    rc, err = _fails(tmp_path, '--config', c1, '--data_dir', bad)
    assert rc == 2 and len(err) == 1 and 'organ_r32.npz' in err[0], err
    # a config key that does not exist
    rc, err = _fails(tmp_path, '--config', c1, '--data_dir', shapes, '--set', 'trainer.args.lerning_rate=0.1')
    assert rc == 2 and len(err) == 1 and 'unknown key trainer.args.lerning_rate' in err[0], err
    wrong = tiny_config(1); wrong['models']['vqvae']['args']['num_codes'] = 8
    rc, err = _fails(tmp_path, '--config', write_config(tmp_path/'w.json', wrong), '--data_dir', shapes)
    assert rc == 2 and len(err) == 1 and 'unknown key models.vqvae.args.num_codes' in err[0], err
    # stage 2 without a stage 1 checkpoint (none given; and a stage 1 folder that has none)
    c2 = write_config(tmp_path/'c2.json', tiny_config(2))
    rc, err = _fails(tmp_path, '--config', c2, '--data_dir', shapes)
    assert rc == 2 and len(err) == 1 and 'stage 2 starts from a stage 1 checkpoint' in err[0], err
    (tmp_path/'s1').mkdir(); (tmp_path/'s1'/'config.json').write_text(json.dumps(tiny_config(1)))
    rc, err = _fails(tmp_path, '--config', c2, '--data_dir', shapes, '--load_dir', tmp_path/'s1')
    assert rc == 2 and len(err) == 1 and 'no complete checkpoint' in err[0], err


def test_the_command_module_does_not_import_torch():
    code = "import sys, medvox_nb.vqvae.train; assert 'torch' not in sys.modules and 'spconv' not in sys.modules"
    assert subprocess.run([sys.executable, '-c', code], env=ENV).returncode == 0
    r = run_medvox('train-vqvae', '--help', env=EXTRA)
    assert r.returncode == 0 and '--num_gpus' in r.stdout and '--tryrun' in r.stdout and '--load_dir' in r.stdout


# ---------------------------------------------------------------- the experiment notebook

def test_papermill_stage_2_continues_the_stage_1_run_of_the_notebook(tmp_path):
    "`papermill nbs/train_vqvae.ipynb out.ipynb -p stage 2` (tiny settings): no stage 1 run yet, so it trains stage 1 first."
    cfg = write_config(tmp_path/'tiny.json', tiny_config(1, dataset='ToyShapes', i_save=3))
    out = tmp_path/'runs'
    pm = [str(Path(sys.executable).parent/'papermill'), str(ROOT/'nbs'/'train_vqvae.ipynb'), str(tmp_path/'s2.ipynb'), '-k', 'python3',
          '--no-progress-bar', '-p', 'stage', '2', '-p', 'output_dir', str(out), '-p', 'max_steps', '3', '-p', 'config', str(cfg)]
    r = subprocess.run(pm, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out/'stage1'/'ckpts'/'misc_step0000003.pt').exists() and (out/'stage2'/'ckpts'/'misc_step0000003.pt').exists()
    run2 = json.loads((out/'stage2'/'config.json').read_text())
    assert run2['trainer']['args']['training_stage'] == 2 and '/stage1/' in run2['run']['init_from']
    rec = json.loads((out/'stage2'/'experiment.json').read_text())
    assert rec['stage'] == 2 and rec['results']['step'] == 3 and rec['run_info']['torch']
    text = (tmp_path/'s2.ipynb').read_text()
    assert 'injected-parameters' in text and 'image/png' in text


# ---------------------------------------------------------------- stages and shipped configs

def test_each_stage_trains_what_it_should():
    "1: the codebook only (and it receives the decoder's gradient); 2: everything; 3: the decoder only. An EMA codebook never takes gradients."
    from medvox_nb.vqvae.train import stage_requires_grad
    kw = dict(resolution=32, model_channels=32, latent_channels=8, num_blocks=1, num_embeddings=64, num_head_channels=16, window_size=4,
              io_channels=(8, 16), sparse_backend='torch')
    m = vm.SparseSDFVQVAE(**kw)
    grads = lambda: {part: {p.requires_grad for p in getattr(m, part).parameters()} for part in ('Encoder', 'vq', 'Decoder')}
    stage_requires_grad(m, 1); assert grads() == dict(Encoder={False}, vq={True}, Decoder={False}) and m.vq.decoder_grad
    stage_requires_grad(m, 2); assert grads() == dict(Encoder={True}, vq={True}, Decoder={True}) and not m.vq.decoder_grad
    stage_requires_grad(m, 3); assert grads() == dict(Encoder={False}, vq={False}, Decoder={True})
    ema = vm.SparseSDFVQVAE(**kw, use_ema_update=True)
    for s in (1, 2): stage_requires_grad(ema, s); assert not ema.vq.embeddings.weight.requires_grad


@pytest.mark.parametrize('name', sorted(p.name for p in (ROOT/'configs'/'vae').glob('*.json')))
def test_shipped_configs_are_valid(name):
    "Every config in configs/vae parses with the seeds' schema; the CT ones keep the guide's stage settings."
    from medvox_nb.vqvae.train import VQVAEConfig
    c = VQVAEConfig.load(ROOT/'configs'/'vae'/name)
    assert c.model.num_embeddings >= 2 and c.model.resolution % 2 ** len(c.model.io_channels) == 0
    if name.startswith('ct_vqvae_stage'):
        stage = int(name[len('ct_vqvae_stage')])
        assert c.trainer.training_stage == stage and c.dataset_name == 'CTWindowSparseSDF'
        assert (c.trainer.learning_rate, c.trainer.loss_type) == ((1e-3, 'l1') if stage == 1 else (5e-3, 'l1_l2'))
        assert (c.trainer.lr_scheduler or {}).get('name') == (None if stage == 1 else 'ExponentialLR')
