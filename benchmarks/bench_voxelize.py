#!/usr/bin/env python
"""Gaussian voxelization: medvox_nb's `Voxelizer` against the seeds' per-sample method, on CPU.

    .venv/bin/python benchmarks/bench_voxelize.py [--repeats 5] [--threads 2] [--quick]

The reference (`seed_voxelize`) is the seed scripts' method written out faithfully: per sample,
min-max scale the points into [0, voxel_size-1], round, clip onto the grid, count the voxels with
`np.unique(axis=0, return_counts=True)` into a float64 grid (`np.zeros` default dtype), then
`scipy.ndimage.gaussian_filter(grid, sigma)` (truncate 4, mode 'reflect'). A batch is a Python
loop over samples, as in the seed's prerender loop.

Ours is `Voxelizer(voxel_size, 'gaussian', sigma, normalize='minmax')`: the same geometry, so the
two outputs are the same volume (the table's last column is their max abs difference over the
reference's max), computed with one scatter and banded matrix products in torch (float32). The
column "ours (box)" is the default geometry (fixed 28 x 28 x 1.6 um box centred on the cloud).

Each repeat times reference and ours back to back on the same clouds (interleaved, so load drift on
a shared machine hits both); the table reports medians and the ratio of medians. Prints a markdown
table; benchmarks/voxelize.md holds a run with its machine.
"""
from __future__ import annotations
import argparse, os, platform, statistics, sys, time
import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from medvox_nb.voxelize import Voxelizer, synthetic_cloud


def seed_voxelize(points: np.ndarray, voxel_size: int, sigma: float) -> np.ndarray:
    "The seeds' per-sample gaussian voxelization (see the module doc)."
    mn, mx = points.min(axis=0), points.max(axis=0)
    norm = (points - mn) / (mx - mn) * (voxel_size - 1)
    idx = np.clip(np.round(norm).astype(np.int64), 0, voxel_size - 1)
    uniq, counts = np.unique(idx, axis=0, return_counts=True)
    grid = np.zeros((voxel_size, voxel_size, voxel_size))
    grid[uniq[:, 0], uniq[:, 1], uniq[:, 2]] = counts
    return gaussian_filter(grid, sigma, truncate=4.0, mode='reflect')


def timed(f):
    t = time.perf_counter(); out = f(); return time.perf_counter() - t, out


def case(size: int, n: int, batch: int, repeats: int, sigma: float = 1.0) -> dict:
    clouds = [synthetic_cloud(n, n_clusters=max(20, n // 500), seed=s) for s in range(batch)]
    ours = Voxelizer(size, 'gaussian', sigma=sigma, normalize='minmax')
    box = Voxelizer(size, 'gaussian', sigma=sigma)
    run_seed = lambda: [seed_voxelize(c, size, sigma) for c in clouds]
    run_ours = lambda: ours(clouds).voxels
    run_box = lambda: box(clouds).voxels
    run_ours(); run_box()                                    # warm-up (caches, allocator)
    ts, to, tb = [], [], []
    for _ in range(repeats):
        t, ref = timed(run_seed); ts.append(t)
        t, got = timed(run_ours); to.append(t)
        t, _ = timed(run_box); tb.append(t)
    ref = np.stack(ref)
    err = float(np.abs(got.numpy() - ref).max() / ref.max())
    ms = lambda x: statistics.median(x) * 1e3
    return dict(size=size, n=n, batch=batch, seed=ms(ts), ours=ms(to), box=ms(tb), ratio=ms(ts) / ms(to), err=err)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--quick', action='store_true', help='only 128^3 / 1e5 points')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cases = [(128, 100_000, 1)] if a.quick else [
        (64, 10_000, 1), (64, 100_000, 1), (128, 10_000, 1), (128, 100_000, 1), (128, 1_000_000, 1),
        (256, 100_000, 1), (256, 1_000_000, 1), (64, 100_000, 16), (128, 100_000, 8)]
    print(f'<!-- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} '
          f'({a.threads} threads, OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "unset")}), numpy {np.__version__}, '
          f'median of {a.repeats} -->')
    print('| grid | points per cloud | clouds | seed (ms) | ours (ms) | speed-up | ours, box geometry (ms) | max abs diff / max |')
    print('|---|---|---|---|---|---|---|---|')
    for size, n, batch in cases:
        r = case(size, n, batch, a.repeats)
        print(f"| {size}^3 | {n:,} | {batch} | {r['seed']:.1f} | {r['ours']:.1f} | {r['ratio']:.1f}x | {r['box']:.1f} | {r['err']:.1e} |", flush=True)


if __name__ == '__main__':
    sys.exit(main())
