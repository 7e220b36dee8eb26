"""Prerendered loading vs on-the-fly voxelization, and bytes per sample on disk.

python benchmarks/bench_prerender.py [--voxel-size 128] [--repeats 5] [--batch 8]
Input: the real SMLM clouds (../shared/data/smlm) plus the embedded samples derived from them
(data_samples/smlm/smlm_samples.h5), gaussian sigma 1, volume 28000 x 28000 x 1600 nm.
"""
import argparse, shutil, statistics, tempfile, time
from pathlib import Path
import numpy as np, torch
from medvox_nb.core import sample_path
from medvox_nb.pointcloud import open_pointclouds, write_ragged_h5, clean_points
from medvox_nb.prerender import DataConfig, PrerenderConfig, prerender, read_metadata
from medvox_nb.dataset import PrerenderedVoxelDataset, PointCloudVoxelDataset

def timeit(f, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--voxel-size', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--batch', type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    clouds = [clean_points(c)[0] for c in (open_pointclouds(sample_path('smlm', 'smlm_samples.h5')))]
    shared = Path(__file__).resolve().parents[2]/'shared'/'data'/'smlm'
    if shared.exists(): clouds += [clean_points(c)[0] for c in open_pointclouds(shared)]
    src = tmp/'clouds.h5'; write_ragged_h5(src, clouds)
    data = DataConfig(input_h5=str(src), voxel_size=a.voxel_size, voxelization_method='gaussian', sigma=1.0)
    t = time.perf_counter(); prerender(data, PrerenderConfig(), tmp/'store'); t_pre = time.perf_counter() - t
    meta = read_metadata(tmp/'store')
    pre, fly = PrerenderedVoxelDataset(tmp/'store'), PointCloudVoxelDataset(data)
    n = min(a.batch, len(pre))
    def load(ds): return lambda: torch.stack([ds[i][0] for i in range(n)])
    load(pre)()  # open handles once (a training loop keeps them open)
    t_pre_b, t_fly_b = timeit(load(pre), a.repeats), timeit(load(fly), a.repeats)
    pts = [len(c) for c in clouds]
    print(f'samples: {len(clouds)} real SMLM clouds ({min(pts)}-{max(pts)} points), grid {a.voxel_size}^3 gaussian sigma 1')
    print(f'prerender of all samples: {t_pre:.2f} s; store {meta["bytes_total"]/1e6:.2f} MB')
    print(f'| grid | batch | on-the-fly (s/batch) | prerendered (s/batch) | speed-up | MB/sample on disk (gzip, threshold 0.001, precision 10) | mean non-zero fraction |')
    print(f'|---|---|---|---|---|---|---|')
    print(f'| {a.voxel_size}^3 | {n} | {t_fly_b:.3f} | {t_pre_b:.4f} | {t_fly_b / t_pre_b:.0f}x | {meta["bytes_per_sample"]/1e6:.3f} | {meta["sparsity"]["mean_nonzero_fraction"]:.4f} |')
    shutil.rmtree(tmp)

if __name__ == '__main__': main()
