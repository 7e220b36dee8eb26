"""Sparse SDF benchmark: the native narrow-band kernel (medvox_nb.sdf.compute) on the liver of the real CT
segmentation (../shared/data/ct/example_seg.nii.gz, TotalSegmentator label 5), signed, at 128³ and 256³ on 2
threads, side by side in one run (interleaved repeats) against the CPU peers a user would reach for:

* Open3D `RaycastingScene.compute_signed_distance` (float32 BVH, ray-parity sign), given our band points for
  free ("restricted to the band": the most favourable setting for it), and queried on every grid point of
  the mesh's box grown by the band (what finding the band costs without our kernel);
* point-cloud-utils `signed_distance_to_mesh` (libigl, fast winding number sign), given our band points;
* an EDT band: the mask resampled onto the grid (its marching-cubes solid sampled at the grid points, the
  definition the tests use), then a signed Euclidean distance transform (`edt`, else scipy) of it.

All start from the same marching-cubes surface in grid coordinates (ours includes marching cubes and the
normalisation, end to end). Accuracy: max |error| and sign errors against a brute-force point-to-triangle
distance (float64) signed by the generalised winding number, on 2000 band points. Memory: the liver at 1024³ in a fresh process, peak RSS.
Reconstruction bars (IoU, Chamfer at 64³ and 128³) for every organ of the segmentation with >= 1000 voxels and two
held-out analytic shapes.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sdf.py [--sizes 128 256] [--repeats 5] [--memory 1024] [--accuracy-samples 20000]

Writes benchmarks/sdf.md (use --md '' to print only).
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEG = Path(os.environ.get('MEDVOX_SHARED_DATA', ROOT.parent/'shared'/'data'))/'ct'/'example_seg.nii.gz'
THREADS = 2


def load_liver():
    import nibabel as nib
    img = nib.load(str(SEG))
    return np.asarray(img.dataobj) == 5, np.asarray(img.affine, float)


def ours(mask, A, R):
    from medvox_nb.sdf.compute import sparse_sdf_from_mask
    return sparse_sdf_from_mask(mask, R, affine=A, fit='shape', threads=THREADS)


def surface_in_grid(mask, d):
    from medvox_nb.sdf.compute import mask_surface, sdf_grid
    v, f = mask_surface(mask)
    return sdf_grid(d).from_source(v), f


def o3d_band(vg, f, pts):
    import open3d as o3d
    scene = o3d.t.geometry.RaycastingScene(nthreads=THREADS)
    scene.add_triangles(o3d.core.Tensor(vg.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    return scene.compute_signed_distance(o3d.core.Tensor(pts.astype(np.float32)), nthreads=THREADS).numpy()


def o3d_box(vg, f, R, band):
    "Open3D on every grid point of the mesh's box grown by the band; the band is what comes out below it."
    lo = np.maximum(np.floor(vg.min(0) - band), 0).astype(int); hi = np.minimum(np.ceil(vg.max(0) + band), R - 1).astype(int)
    axes = [np.arange(a, b + 1, dtype=np.float32) for a, b in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    d = o3d_band(vg, f, pts)
    keep = np.abs(d) < band
    return pts[keep].astype(np.int32), d[keep]


def pcu_band(vg, f, pts):
    import point_cloud_utils as pcu
    return pcu.signed_distance_to_mesh(pts.astype(np.float64), vg.astype(np.float64), f.astype(np.int64))[0]


def edt_band(vg, f, R, band):
    "The mask at resolution R (its surface's solid at the grid points), then a signed EDT; band |d| < band."
    from medvox_nb.sdf.compute import inside_points
    lo = np.maximum(np.floor(vg.min(0) - band - 1), 0).astype(int); hi = np.minimum(np.ceil(vg.max(0) + band + 1), R - 1).astype(int)
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    occ = inside_points(vg, f, pts, R, threads=THREADS).reshape([len(a) for a in axes])
    try:
        import edt
        din = edt.edt(occ, parallel=THREADS, black_border=False); dout = edt.edt(~occ, parallel=THREADS, black_border=False)
        how = 'edt'
    except ImportError:
        from scipy.ndimage import distance_transform_edt as dte
        din, dout = dte(occ), dte(~occ); how = 'scipy'
    sd = np.where(occ, -(din - 0.5), dout - 0.5)
    keep = np.abs(sd) < band
    return pts[keep.reshape(-1)].astype(np.int32), sd[keep].astype(np.float32), how


def winding_number(P, V, F, chunk=32):
    "Generalised winding number (solid angles): the sign reference, independent of every method's own inside test."
    T = V[F]
    out = np.empty(len(P))
    for s in range(0, len(P), chunk):
        d = T[None] - P[s:s + chunk, None, None]
        a, b, c = d[..., 0, :], d[..., 1, :], d[..., 2, :]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        num = np.einsum('...i,...i', a, np.cross(b, c))
        den = la * lb * lc + np.einsum('...i,...i', a, b) * lc + np.einsum('...i,...i', b, c) * la + np.einsum('...i,...i', c, a) * lb
        out[s:s + chunk] = 2 * np.arctan2(num, den).sum(1) / (4 * np.pi)
    return out


def reference(vg, f, pts):
    "Brute-force float64 point-to-triangle distance, signed by the winding number."
    from medvox_nb.sdf.compute import point_triangle_distance
    d = point_triangle_distance(pts, vg, f)
    return np.where(np.abs(winding_number(pts.astype(float), vg, f)) > 0.5, -d, d)


def timed_interleaved(fns: dict, repeats: int) -> dict:
    "name -> (median wall s, min wall s, median CPU s of the process, all threads)."
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c, t = time.process_time(), time.perf_counter(); fn(); ts[k].append((time.perf_counter() - t, time.process_time() - c))
    return {k: (statistics.median(w for w, _ in v), min(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in ts.items()}


def memory_run(R: int) -> dict:
    "Run the 1024³ case in a fresh process; returns its timing, point count and peak RSS."
    code = f"""
import resource, time, json, sys, tempfile
sys.path.insert(0, {str(Path(__file__).parent)!r})
import bench_sdf as b
from medvox_nb.sdf.compute import save_sparse_sdf
m, A = b.load_liver()
t = time.perf_counter(); d = b.ours(m, A, {R}); dt = time.perf_counter() - t
with tempfile.TemporaryDirectory() as tmp:
    t2 = time.perf_counter(); save_sparse_sdf(tmp + '/l.npz', d); ds = time.perf_counter() - t2
    import os; size = os.path.getsize(tmp + '/l.npz')
# VmHWM: the peak RSS of this process image (ru_maxrss would include the parent's RSS at fork time: Linux
# carries the old image's high-water mark across exec)
hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])
print(json.dumps(dict(points=len(d['sparse_index']), seconds=dt, save_seconds=ds, file_mb=size / 1e6, peak_rss_gb=hwm / 2**20)))
"""
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(THREADS)))
    if p.returncode: raise SystemExit(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def held_out(name):
    "The held-out analytic shapes of tests/test_sdf.py: a ball on 1.5 x 1.5 x 3 mm voxels, a tilted torus on 2 mm voxels."
    if name == 'ball':
        c = np.array([19.2, 17.6, 8.7])[:, None, None, None]
        r = np.linalg.norm((np.indices((40, 36, 18)) - c) * np.array([1.5, 1.5, 3.0])[:, None, None, None], axis=0)
        return r < 21.5, np.diag([1.5, 1.5, 3.0, 1.])
    x, y, z = (np.indices((48, 44, 30)) - np.array([23.6, 21.3, 14.8])[:, None, None, None]) * 2.0
    a = np.deg2rad(25); y, z = y * np.cos(a) - z * np.sin(a), y * np.sin(a) + z * np.cos(a)
    return np.hypot(np.hypot(x, y) - 26.0, z) < 9.5, np.diag([2.0, 2.0, 2.0, 1.])


def accuracy_bars(n: int) -> list:
    "Reconstruction IoU / Chamfer (grid voxels) for every organ of example_seg with >= 1000 voxels and the held-out shapes."
    import nibabel as nib
    from medvox_nb.sdf.compute import sparse_sdf_from_mask, reconstruction_scores
    from medvox_nb.ct.preprocess import TOTALSEG_CLASSES
    img = nib.load(str(SEG)); seg = np.asarray(img.dataobj); A = np.asarray(img.affine, float)
    labels = [int(l) for l, c in zip(*np.unique(seg, return_counts=True)) if l and c >= 1000]
    shapes = [(f'{TOTALSEG_CLASSES[l - 1]} ({l})', seg == l, A) for l in labels] + [(k, *held_out(k)) for k in ('ball', 'torus')]
    rows = []
    for name, m, aff in shapes:
        for fit in ('shape', 'volume'):
            for R in (64, 128):
                s = reconstruction_scores(sparse_sdf_from_mask(m, R, affine=aff, fit=fit, threads=THREADS), m, n=n)
                rows.append(dict(shape=name, voxels=int(m.sum()), fit=fit, R=R, **{k: float(v) for k, v in s.items()}))
        print(name, [round(r['chamfer'], 3) for r in rows[-4:]], flush=True)
    return rows


def bar_summary(speed: list, acc: list, mem: dict|None, mem_res: int, bars: list) -> list:
    "The issue's bars, each with its figure and met / not met (wall clock and CPU time both, the machine being shared)."
    out = ['## Bars', '', '| bar | figure | met |', '|---|---|---|']
    yes = lambda ok: 'met' if ok else '**not met**'
    for R, limit in ((128, 0.5), (256, 3.0)):
        o = next((r for r in speed if r['R'] == R and r['method'] == 'ours'), None)
        if o is None: continue
        out.append(f"| signed sparse SDF of the liver at {R}³ <= {limit:g} s | median wall {o['median']:.3f} s (min {o['min']:.3f}), "
                   f"CPU {o['cpu']:.3f} s (2 threads) | wall: {yes(o['median'] <= limit)}, min wall: {yes(o['min'] <= limit)}, CPU: {yes(o['cpu'] <= limit)} |")
    exact = {(r['R'], r['method']) for r in acc if r['max_err'] <= 1e-4 and r['sign_err'] == 0 and r['missing'] == 0}
    for R in sorted({r['R'] for r in speed}):
        peers = [r for r in speed if r['R'] == R and r['method'] != 'ours']
        if not peers: continue
        eq = [r for r in peers if (R, r['method']) in exact]
        allp = min(peers, key=lambda r: r['ratio'])
        txt = ''
        if eq:
            b = min(eq, key=lambda r: r['ratio'])
            txt = f"fastest peer at equal accuracy ({b['method']}): {b['ratio']:.2f}x wall, {b['cpu_ratio']:.2f}x CPU"
            ok = b['ratio'] >= 2 and b['cpu_ratio'] >= 2
        else: ok = False
        if allp['method'] not in [r['method'] for r in eq]:
            txt += f"; fastest of all ({allp['method']}, not equal accuracy): {allp['ratio']:.2f}x wall, {allp['cpu_ratio']:.2f}x CPU"
        out.append(f'| >= 2x the fastest CPU peer at equal accuracy, {R}³ | {txt.lstrip("; ")} | {yes(ok)} |')
    if mem:
        out.append(f"| peak RSS at {mem_res}³ (liver) <= 2 GB | {mem['peak_rss_gb']:.2f} GB | {yes(mem['peak_rss_gb'] <= 2)} |")
    if bars:
        n_ok = sum(r['iou'] >= 0.999 and r['chamfer'] <= 0.1 for r in bars)
        out.append(f"| IoU >= 0.999 and Chamfer <= 0.1 voxel at 64³ and 128³ | {n_ok} of {len(bars)} (shape, fit, R) cases; "
                   f"min IoU {min(r['iou'] for r in bars):.5f}, max Chamfer {max(r['chamfer'] for r in bars):.4f} | {yes(n_ok == len(bars))} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--sizes', type=int, nargs='*', default=[128, 256], help='speed/accuracy grid sizes (none: skip)')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--memory', type=int, default=1024, help='resolution of the memory run (0: skip)')
    ap.add_argument('--md', default=str(Path(__file__).with_name('sdf.md')))
    ap.add_argument('--accuracy-samples', type=int, default=20000, help='surface samples per Chamfer direction (0: skip the accuracy table)')
    a = ap.parse_args(argv)
    from medvox_nb.sdf.compute import kernel_info
    if not SEG.exists(): raise SystemExit(f'{SEG} not found (../shared/data)')
    mask, A = load_liver()
    info = kernel_info()
    speed, acc = [], []
    for R in a.sizes:
        band = 4.0
        d = ours(mask, A, R)
        vg, f = surface_in_grid(mask, d)
        pts = d['sparse_index']
        peers = dict(ours=lambda: ours(mask, A, R), open3d_band=lambda: o3d_band(vg, f, pts),
                     pcu_band=lambda: pcu_band(vg, f, pts), edt_band=lambda: edt_band(vg, f, R, band))
        t = timed_interleaved(peers, a.repeats)
        c0, t0 = time.process_time(), time.perf_counter(); o3d_box(vg, f, R, band)   # slow: once
        t['open3d_box'] = (time.perf_counter() - t0, time.perf_counter() - t0, time.process_time() - c0)
        # accuracy on 2000 band points against brute force
        rng = np.random.default_rng(0)
        sel = rng.choice(len(pts), min(2000, len(pts)), replace=False)
        got = d['sparse_sdf'][sel, 0] * band
        ref = reference(vg, f, pts[sel])
        o3 = o3d_band(vg, f, pts[sel]); pc = pcu_band(vg, f, pts[sel])
        ep, ed, how = edt_band(vg, f, R, band)
        lut = {tuple(p): i for i, p in enumerate(ep)}
        ei = np.array([lut.get(tuple(p), -1) for p in pts[sel]])
        e = np.where(ei >= 0, ed[np.maximum(ei, 0)], np.nan)
        bp, bd = o3d_box(vg, f, R, band)
        for name, vals, npts in (('ours', got, len(pts)), ('open3d_band', o3, len(pts)), ('open3d_box', o3, len(bp)),
                                 ('pcu_band', pc, len(pts)), ('edt_band', e, len(ep))):
            ok = np.isfinite(vals)
            off = ok & (np.abs(ref) > 1e-6)                                   # points on the surface have no side
            acc.append(dict(R=R, method=name, points=npts, max_err=float(np.abs(vals[ok] - ref[ok]).max()),
                            mean_err=float(np.abs(vals[ok] - ref[ok]).mean()), sign_err=int(((vals[off] < 0) != (ref[off] < 0)).sum()),
                            missing=int((~ok).sum())))
        for k, (med, mn, cpu) in t.items():
            speed.append(dict(R=R, method=k, median=med, min=mn, cpu=cpu, ratio=med / t['ours'][0], cpu_ratio=cpu / t['ours'][2]))
        print(f'R={R}: ' + ', '.join(f'{k} {v[0]:.3f}s' for k, v in t.items()), flush=True)
    bars = accuracy_bars(a.accuracy_samples) if a.accuracy_samples else []
    mems = [memory_run(a.memory) for _ in range(3)] if a.memory else []
    mem = max(mems, key=lambda m: m['peak_rss_gb']) if mems else None
    if mem: print(f'memory {a.memory}³: {mems}', flush=True)
    load = os.getloadavg()
    lines = ['# Sparse SDF benchmark', '',
             f'Command: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sdf.py --sizes {" ".join(map(str, a.sizes))} --repeats {a.repeats} --memory {a.memory} --accuracy-samples {a.accuracy_samples}`  ',
             f'Machine: {platform.node()} ({os.cpu_count()} cores, shared with other jobs; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} '
             f'at the end), {platform.platform()}, python {platform.python_version()}, numpy {np.__version__}; kernel: OpenMP {info.get("openmp")}, {THREADS} threads  ',
             f'Date: {time.strftime("%Y-%m-%dT%H:%M:%S%z")}', '',
             'Input: the liver of `../shared/data/ct/example_seg.nii.gz` (TotalSegmentator label 5, 38,634 voxels of 3 mm), '
             "fitted by its shape (`fit='shape'`: centred, longest side spanning R - 11 grid steps), band 4 grid voxels "
             '(`threshold_factor=4`). Every method gets the same marching-cubes surface in grid coordinates; "ours" is '
             '`sparse_sdf_from_mask` end to end (marching cubes, kernel with sign, normalisation). Times: median (min) of '
             f'{a.repeats} interleaved repeats, wall clock (open3d_box: one run); ratio = method / ours (> 1: ours is faster). '
             'Sign errors count band points off the surface (|d| > 1e-6) whose side differs from the reference.', '',
             '## Speed', '', '| R | method | points | median s | min s | ratio to ours | CPU s (all threads) | CPU ratio |', '|---|---|---|---|---|---|---|---|']
    if not speed: del lines[-4:]
    lines[len(lines) - (4 if speed else 0):len(lines) - (4 if speed else 0)] = bar_summary(speed, acc, mem, a.memory, bars) + ['']
    pts_of = {(r['R'], r['method']): r['points'] for r in acc}
    for r in speed:
        lines.append(f"| {r['R']} | {r['method']} | {pts_of.get((r['R'], r['method']), ''):,} | {r['median']:.3f} | {r['min']:.3f} | {r['ratio']:.2f} | {r['cpu']:.3f} | {r['cpu_ratio']:.2f} |")
    if acc: lines += ['', '## Accuracy (2000 band points against brute-force float64 point-to-triangle distances signed by the winding number, grid units)', '',
              '| R | method | max abs error | mean abs error | sign errors | points not in its band |', '|---|---|---|---|---|---|']
    for r in acc:
        lines.append(f"| {r['R']} | {r['method']} | {r['max_err']:.2e} | {r['mean_err']:.2e} | {r['sign_err']} | {r['missing']} |")
    if mem:
        runs = ', '.join(f"{m['peak_rss_gb']:.2f}" for m in mems)
        lines += ['', f'## Memory: the liver at {a.memory}³', '',
                  f"{mem['points']:,} band points in {mem['seconds']:.1f} s (saved in {mem['save_seconds']:.1f} s, {mem['file_mb']:.0f} MB .npz); "
                  f"peak RSS of the whole process (Python, NumPy, scikit-image included), the largest of 3 runs: **{mem['peak_rss_gb']:.2f} GB** "
                  f"(runs: {runs}; bar: 2 GB). "
                  f"A dense {a.memory}³ float32 grid alone would take {a.memory**3 * 4 / 2**30:.1f} GB."]
    if bars:
        lines += ['', '## Accuracy bars: reconstruction at 64³ and 128³', '',
                  'Sparse SDF -> dense (beyond the band -1 inside, +1 outside) -> marching cubes at 0, against the mask at '
                  'resolution R (the solid bounded by its level-0.5 marching-cubes surface, mapped onto the grid by the fit). '
                  'IoU: occupancy at the grid points of the box around both surfaces (points on a surface left out). '
                  f'Chamfer: mean of both directions\' mean point-to-surface distance, {a.accuracy_samples:,} area-uniform samples '
                  'per surface, exact distances; Hausdorff: the largest sampled distance. Grid voxels. Every organ of '
                  'example_seg with at least 1,000 voxels, and the held-out analytic shapes. Bars: IoU >= 0.999, Chamfer <= 0.1.', '',
                  '| shape | voxels | fit | R | IoU | Chamfer | Hausdorff | bars |', '|---|---|---|---|---|---|---|---|']
        for r in bars:
            ok = r['iou'] >= 0.999 and r['chamfer'] <= 0.1
            lines.append(f"| {r['shape']} | {r['voxels']:,} | {r['fit']} | {r['R']} | {r['iou']:.5f} | {r['chamfer']:.4f} | {r['hausdorff']:.3f} | {'met' if ok else '**not met**'} |")
    text = '\n'.join(lines) + '\n'
    print(text)
    if a.md: Path(a.md).write_text(text)


if __name__ == '__main__':
    main()
