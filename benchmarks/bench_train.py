#!/usr/bin/env python
"""Per-step overhead of the shared training loop (`medvox_nb.train.Trainer`) against a bare torch loop.

    .venv/bin/python benchmarks/bench_train.py [--steps 300] [--repeats 5] [--threads 2]

Both run the same model, optimiser, data and number of steps on CPU: the bare loop is
`for x, y in loader: loss = mse(net(x), y); loss.backward(); opt.step(); opt.zero_grad()`; the
trainer runs its full step (micro-batch split, autocast context, GradScaler no-op, scheduler-free
optimiser step, loss dict, log.jsonl every `i_log` steps, the progress bar code path, one
checkpoint at the end is excluded by timing only the step loop). Two models: a small MLP (about
1 ms a step: the worst case for a fixed per-step cost) and a small 3D conv net at 16^3 (a few ms,
the size of the tests' model stages). Repeats are interleaved; the table reports medians.
"""
from __future__ import annotations
import argparse, os, platform, statistics, tempfile, time
import torch
from medvox_nb.train import Trainer, TrainConfig

def make(kind: str, n: int=512):
    g = torch.Generator().manual_seed(0)
    if kind == 'mlp':
        x = torch.randn(n, 64, generator=g); y = torch.randn(n, 1, generator=g)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 1))
    else:
        x = torch.randn(n, 1, 16, 16, 16, generator=g); y = torch.randn(n, 1, 16, 16, 16, generator=g)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 3, padding=1), torch.nn.GELU(), torch.nn.Conv3d(16, 16, 3, padding=1), torch.nn.GELU(), torch.nn.Conv3d(16, 1, 3, padding=1))
    return net, torch.utils.data.TensorDataset(x, y)

def bare(kind, steps, bs):
    net, ds = make(kind)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    it, t0, c0 = iter(loader), time.perf_counter(), time.process_time()
    for s in range(steps):
        try: x, y = next(it)
        except StopIteration: it = iter(loader); x, y = next(it)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        float(loss.detach())   # the bare loop reads its loss too, as any loop that prints it does
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

class Stage(Trainer):
    def configure_optimizers(self): return {'main': torch.optim.AdamW(self.models['net'].parameters(), lr=1e-3)}
    def training_losses(self, b):
        x, y = b
        return {'loss': torch.nn.functional.mse_loss(self.model()(x), y)}

def ours(kind, steps, bs, d):
    net, ds = make(kind)
    t = Stage(TrainConfig(output_dir=d, max_steps=steps, batch_size=bs, i_save=10**9, i_val=0, i_sample=0, i_log=10, i_print=100,
                          tensorboard=False), {'net': net}, train_data=ds)
    t.setup()
    for m in t.models.values(): m.train()
    t0, c0 = time.perf_counter(), time.process_time()
    while t.step < steps:   # the body of Trainer.fit, without the final checkpoint
        logs = t.train_step(t.next_batch()); t.step += 1
        if t.step % t.cfg.i_log == 0: t.log_scalars(logs)
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=300); ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=2); ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--models', nargs='+', default=['mlp', 'conv3d_16'])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {a.threads} threads')
    print(f'load average before: {os.getloadavg()[0]:.1f}')
    print('\n| model | bare torch loop (ms/step, wall / CPU) | Trainer (ms/step, wall / CPU) | overhead (wall / CPU) |\n|---|---|---|---|')
    for kind in a.models:
        b, o = [], []
        with tempfile.TemporaryDirectory() as d:
            for r in range(a.repeats):
                b.append(bare(kind, a.steps, a.batch)); o.append(ours(kind, a.steps, a.batch, f'{d}/{r}'))
        mb, mo = statistics.median(x[0] for x in b), statistics.median(x[0] for x in o)
        cb, co = statistics.median(x[1] for x in b), statistics.median(x[1] for x in o)
        print(f'| {kind} (batch {a.batch}) | {mb*1e3:.3f} / {cb*1e3:.3f} | {mo*1e3:.3f} / {co*1e3:.3f} | {100*(mo/mb - 1):+.1f} % / {100*(co/cb - 1):+.1f} % |')
