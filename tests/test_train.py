"The shared training loop as processes: SIGKILL then resume is bit-identical, 2-process DDP equals 1 process."
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'tests'/'toy_train.py'
ENV = dict(os.environ, MEDVOX_PROGRESS='0', OMP_NUM_THREADS='1')

def run(*args, **kw):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300, **kw)

def load_step(d, step, name):
    return torch.load(Path(d)/'ckpts'/f'{name}_step{step:07d}.pt', weights_only=True)

def test_sigkill_then_resume_is_bit_identical(tmp_path):
    ref = tmp_path/'ref'
    r = run('--output_dir', ref, '--max_steps', 40, '--batch_size', 8)
    assert r.returncode == 0, r.stderr
    killed = tmp_path/'killed'
    p = subprocess.Popen([sys.executable, str(SCRIPT), '--output_dir', str(killed), '--max_steps', '40', '--batch_size', '8', '--delay', '0.05'],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (killed/'ckpts'/'misc_step0000015.pt').exists():
        assert p.poll() is None and time.time() - t0 < 120, 'the run ended before it could be killed'
        time.sleep(0.01)
    time.sleep(0.12)  # somewhere between two checkpoints
    p.send_signal(signal.SIGKILL); p.wait()
    assert not (killed/'ckpts'/'misc_step0000040.pt').exists()
    r = run('--output_dir', killed, '--max_steps', 40, '--batch_size', 8, '--load_dir', killed, '--ckpt', 'latest')
    assert r.returncode == 0, r.stderr
    assert 'Loading checkpoint from step' in r.stderr
    for name in ('toy', 'toy_ema0.9', 'toy_ema0.99'):
        a, b = load_step(ref, 40, name), load_step(killed, 40, name)
        assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0, name
    ma, mb = load_step(ref, 40, 'misc'), load_step(killed, 40, 'misc')
    sa, sb = ma['optimizers']['main']['state'], mb['optimizers']['main']['state']
    assert all(torch.equal(sa[i]['exp_avg_sq'], sb[i]['exp_avg_sq']) for i in sa)
    assert (ma['step'], ma['epoch'], ma['batch_in_epoch']) == (mb['step'], mb['epoch'], mb['batch_in_epoch'])
    assert ma['schedulers'] == mb['schedulers']
    # no temporary files left behind by the killed writer that a reader could take for a checkpoint
    assert not [p for p in (killed/'ckpts').iterdir() if p.name.startswith('.') and p.stat().st_size == 0 and p.suffix == '.pt']

def test_ddp_two_processes_equal_one_process_on_the_combined_batch(tmp_path):
    one = tmp_path/'one'
    r = run('--output_dir', one, '--max_steps', 6, '--batch_size', 8, '--dropout', 0, '--i_save', 6)
    assert r.returncode == 0, r.stderr
    two = tmp_path/'two'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29533', str(SCRIPT),
           '--output_dir', str(two), '--max_steps', '6', '--batch_size', '4', '--dropout', '0', '--i_save', '6']
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_step(one, 6, 'toy'), load_step(two, 6, 'toy')
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-6, diff
    assert max((a[k] - load_step(one, 6, 'toy')[k]).abs().max().item() for k in a) == 0
    # and it trained: the weights moved from their initialisation
    from medvox_nb.train import ToyRegression, TrainConfig
    init = ToyRegression(TrainConfig(output_dir=str(tmp_path/'init'), tensorboard=False), dropout=0.0).models['toy'].state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3
