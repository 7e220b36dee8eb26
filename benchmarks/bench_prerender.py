"""Prerendered loading vs on-the-fly voxelization (per batch), and bytes per sample on disk.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_prerender.py [--sizes 64 128] [--repeats 5] [--batch 8]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_prerender.py --write [--sizes 128] [--batch 8]

`--write` times writing one batch file instead: `write_batch` (the HDF5 file assembled in memory,
then one write under a temporary name) against writing the same voxels straight into an HDF5 file
on disk (what it did before; HDF5 2.0 segfaults at exit after a failed write to disk, e.g. a full
disk), same chunks and compression, interleaved, median of `--repeats`.

Clouds: the real SMLM clouds (../shared/data/smlm, when present) and the embedded samples derived from
them (data_samples/smlm/smlm_samples.h5, 2.5k-11k points), plus, as the seed's production case, 8
synthetic clustered clouds of 1e5 points. Gaussian, sigma 1 voxel, volume 28000 x 28000 x 1600 nm,
threshold 0.001, precision 10. A batch is `--batch` samples read one by one through the dataset (as a
DataLoader with batch_size does), stacked into one tensor.
"""
import argparse, shutil, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).parent))
from bench_voxelize import seed_voxelize
from medvox_nb.core import sample_path
from medvox_nb.pointcloud import open_pointclouds, write_ragged_h5, clean_points
from medvox_nb.voxelize import synthetic_cloud
from medvox_nb.prerender import PrerenderConfig, prerender, read_metadata
from medvox_nb.dataset import DataConfig, PrerenderedVoxelDataset, PointCloudVoxelDataset

def median_time(f, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def run(clouds, label, size, batch, repeats, tmp):
    src = tmp/f'{label}.h5'; write_ragged_h5(src, clouds)
    data = DataConfig(input_h5=str(src), voxel_size=size, voxelization_method='gaussian', sigma=1.0)
    n = min(batch, len(clouds))
    load = lambda ds: (lambda: torch.stack([ds[i][0] for i in range(n)]))
    fly = PointCloudVoxelDataset(data)
    t_fly = median_time(load(fly), repeats)
    t_seed = median_time(lambda: torch.stack([torch.from_numpy(seed_voxelize(clouds[i], size, 1.0)) for i in range(n)]), max(1, repeats // 2))
    rows = []
    for comp in ('gzip', 'zstd', 'blosc'):
        prerender(data.input_h5, data, PrerenderConfig(compression=comp), tmp/f'{label}_{size}_{comp}')
        meta = read_metadata(tmp/f'{label}_{size}_{comp}')
        ds = PrerenderedVoxelDataset(tmp/f'{label}_{size}_{comp}'); load(ds)()   # handles opened once, as in training
        rows.append((comp, median_time(load(ds), repeats), meta['bytes_per_sample'], meta['sparsity']['mean_nonzero_fraction']))
    cached = PrerenderedVoxelDataset(tmp/f'{label}_{size}_gzip', cache=True); load(cached)()
    t_cache = median_time(load(cached), repeats)
    t_floor = median_time(lambda: torch.stack([torch.zeros((1, size, size, size)) for _ in range(n)]), repeats)
    for comp, t, b, nz in rows:
        print(f'| {label} | {size}^3 | {comp} | {b/1e6:.3f} | {nz:.4f} | {t_seed:.3f} | {t_fly:.3f} | {t:.4f} | {t_seed/t:.0f}x | {t_fly/t:.1f}x |')
    print(f'| {label} | {size}^3 | gzip, cache=True (2nd epoch) | | | {t_seed:.3f} | {t_fly:.3f} | {t_cache:.4f} | {t_seed/t_cache:.0f}x | {t_fly/t_cache:.1f}x |')
    print(f'| {label} | {size}^3 | floor: allocate + stack {n} zero tensors | | | | | {t_floor:.4f} | | |')

def bench_write(size, batch, repeats, tmp):
    import h5py
    from medvox_nb.core import atomic_path
    from medvox_nb.voxelize import Voxelizer
    from medvox_nb.prerender import write_batch, quantize, h5_compression, chunk_shape, write_sparse_chunks, _params
    vz, cfg = Voxelizer(size, 'gaussian', sigma=1.0), PrerenderConfig()
    vb = vz([synthetic_cloud(100_000, seed=s) for s in range(batch)])
    info = dict(names=[f's{i}' for i in range(batch)], labels=[''] * batch, sources=[''] * batch, source_samples=[-1] * batch)
    def on_disk(path):
        vox = quantize(vb.voxels.numpy(), cfg.threshold, cfg.precision)
        with atomic_path(path) as t, h5py.File(t, 'w', track_order=True) as f:
            d = f.create_dataset('voxels', shape=vox.shape, dtype='f4', fillvalue=0, chunks=chunk_shape(vox.shape[1:], cfg.chunk_size),
                                 **h5_compression(cfg.compression))
            for i in range(len(vox)): write_sparse_chunks(d, i, vox[i])
    in_memory = lambda path: write_batch(path, 0, vb, list(range(batch)), info, [], _params(vz, cfg), {'digest': ''}, cfg)
    td, tm = [], []
    for _ in range(repeats):
        td.append(median_time(lambda: on_disk(tmp/'disk.h5'), 1)); tm.append(median_time(lambda: in_memory(tmp/'mem.h5'), 1))
    a, b = h5py.File(tmp/'disk.h5'), h5py.File(tmp/'mem.h5')
    assert (a['voxels'][:] == b['voxels'][:]).all()
    print(f'| {size}^3 | {batch} x 1e5-point synthetic clouds | gzip | {statistics.median(td):.2f} | {statistics.median(tm):.2f} | '
          f'{statistics.median(td) / statistics.median(tm):.2f}x | {(tmp/"mem.h5").stat().st_size / 1e6:.1f} MB |')

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--write', action='store_true', help='time writing one batch file instead (see the module doc)')
    a = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    if a.write:
        print(f'median of {a.repeats}, s per batch file')
        print('| grid | batch | compression | straight to disk | in memory + one write | ratio | file |')
        print('|---|---|---|---|---|---|---|')
        for size in a.sizes: bench_write(size, a.batch, a.repeats, tmp)
        shutil.rmtree(tmp); return
    real = [clean_points(c)[0] for c in open_pointclouds(sample_path('smlm', 'smlm_samples.h5'))]
    shared = Path(__file__).resolve().parents[2]/'shared'/'data'/'smlm'
    if shared.exists(): real += [clean_points(c)[0] for c in open_pointclouds(shared)]
    big = [synthetic_cloud(100_000, seed=i) for i in range(a.batch)]
    print(f'batch of {a.batch} samples; times in s per batch (median of {a.repeats}); real clouds: {len(real)} ({min(map(len, real))}-{max(map(len, real))} points)')
    print('| clouds | grid | compression | MB/sample | non-zero fraction | seed on-the-fly | ours on-the-fly | prerendered | vs seed | vs ours |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for size in a.sizes:
        run(real, 'real SMLM', size, a.batch, a.repeats, tmp)
        run(big, 'synthetic 1e5 pts', size, a.batch, a.repeats, tmp)
    shutil.rmtree(tmp)

if __name__ == '__main__': main()
