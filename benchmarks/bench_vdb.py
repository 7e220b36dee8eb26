"""VDB storage benchmark: file size and save/load time of OpenVDB files (medvox_nb.vdb / neuralvdb)
against dense float32 `.npy` and compressed `.npz` of the same grid, at several occupancies and
tolerances; and what a Plenoxel export costs and loses on a grid fitted to real views (the render-aware
sparsity of neuralvdb against the old "density > 1e-4" rule). Writes benchmarks/vdb.md.

    .venv/bin/python benchmarks/bench_vdb.py [--size 128] [--repeats 3]
"""
import argparse, io, os, platform, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np
from scipy import ndimage

from medvox_nb import vdb as V
from medvox_nb.core import run_info


def field(n, occupancy, seed=0):
    "A clustered positive field (smoothed noise, exponential values) with `occupancy` of voxels non-zero."
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), 3)
    thr = np.quantile(f, 1 - occupancy)
    v = np.where(f > thr, np.exp((f - thr) / f.std()) - 1 + 1e-3, 0).astype(np.float32)
    return v / v.max()


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--out', default=str(Path(__file__).with_name('vdb.md')))
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    n, R = a.size, a.repeats
    rows, speed = [], []
    for occ in (0.01, 0.10, 0.50):
        vol = field(n, occ)
        npy, npz = tmp / 'v.npy', tmp / 'v.npz'
        t_npy = timed(lambda: np.save(npy, vol), R); t_npz = timed(lambda: np.savez_compressed(npz, vol=vol), R)
        s_npy, s_npz = npy.stat().st_size, npz.stat().st_size
        l_npy = timed(lambda: np.load(npy), R); l_npz = timed(lambda: np.load(npz)['vol'], R)
        for tol in (0.0, 1e-3, 1e-2):
            for comp, half in (('none', False), ('zip', False), ('blosc', False), ('zip', True), ('blosc', True)):
                f = tmp / 'v.vdb'
                t_s = timed(lambda: V.save_volume_vdb(f, vol, np.eye(4), tolerance=tol, half=half, compression=comp), R)
                t_l = timed(lambda: V.load_volume_vdb(f), R)
                back, _ = V.load_volume_vdb(f)
                err = float(np.abs(back - vol).max())
                active = V.vdb_info(f)['grids']['density']['active_voxel_count']
                s = f.stat().st_size
                rows.append((f'{occ:.0%}', tol, comp + (' +half' if half else ''), active, s / 1e6, s / s_npy, s / s_npz, err))
                if tol == 0.0: speed.append((f'{occ:.0%}', comp + (' +half' if half else ''), t_s, t_l, t_s / t_npy, t_s / t_npz, t_l / l_npy, t_l / l_npz))
        rows.append((f'{occ:.0%}', '-', 'npy (dense f32)', n ** 3, s_npy / 1e6, 1.0, s_npy / s_npz, 0.0))
        rows.append((f'{occ:.0%}', '-', 'npz (compressed)', n ** 3, s_npz / 1e6, s_npz / s_npy, 1.0, 0.0))
        speed.append((f'{occ:.0%}', 'npy', t_npy, l_npy, 1.0, t_npy / t_npz, 1.0, l_npy / l_npz))
        speed.append((f'{occ:.0%}', 'npz', t_npz, l_npz, t_npz / t_npy, 1.0, l_npz / l_npy, 1.0))

    # a Plenoxel grid (demo sphere, sh_degree 2) through NeuralVDB vs torch.save / npz of its parameters
    import torch
    from medvox_nb.neuralvdb import demo_voxel_grid, save_plenoxel_as_neuralvdb, NeuralVDBConfig, load_plenoxel_from_neuralvdb
    pn = max(16, n // 2)
    g, mc = demo_voxel_grid(pn)
    pl = []
    pt = tmp / 'g.pt'; t_pt = timed(lambda: torch.save(g.state_dict(), pt), R); s_pt = pt.stat().st_size
    pz = tmp / 'g.npz'; t_pz = timed(lambda: np.savez_compressed(pz, density=g.density.detach().numpy(), sh=g.sh.detach().numpy()), R); s_pz = pz.stat().st_size
    pl.append(('torch.save (dense)', s_pt / 1e6, 1.0, t_pt, '-'))
    pl.append(('npz compressed (dense)', s_pz / 1e6, s_pz / s_pt, t_pz, '-'))
    for lvl, half in ((0, False), (3, True), (6, False), (6, True), (9, True)):
        cfg = NeuralVDBConfig(compression_level=lvl, half_precision=half)
        f = tmp / 'g.vdb'
        t = timed(lambda: save_plenoxel_as_neuralvdb(g, f, mc, cfg), R)
        tl = timed(lambda: load_plenoxel_from_neuralvdb(f), R)
        pl.append((f'NeuralVDB level {lvl} ({cfg.file_compression}{", half" if half else ""})', f.stat().st_size / 1e6, f.stat().st_size / s_pt, t, f'{tl:.3f}'))

    # a grid fitted to real views: what each way of storing it costs and how it renders (2 held-out views)
    import torch.nn.functional as F
    from medvox_nb.core import sample_path
    from medvox_nb.neuralvdb import save_plenoxel_vdb, load_plenoxel_vdb, NeuralVDBManager
    from medvox_nb.plenoxels import VoxelGrid, PlenoxelConfig, load_blender, get_rays, render_rays, render_image, psnr, prune
    torch.manual_seed(0)
    sc = load_blender(sample_path('nerf_lego_small'), 'train', img_wh=(50, 50))
    val = load_blender(sample_path('nerf_lego_small'), 'val', img_wh=(50, 50), views=[0, 1])
    fcfg = PlenoxelConfig(resolution=(32,) * 3, scene_bounds=(-1.5,) * 3 + (1.5,) * 3, sh_degree=1)
    fg = VoxelGrid.from_config(fcfg)
    o, d = (torch.stack(x).reshape(-1, 3) for x in zip(*[get_rays(sc['H'], sc['W'], sc['focal'], c) for c in sc['c2w']]))
    rgb, gen = sc['images'].reshape(-1, 3), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam([dict(params=[fg.density], lr=0.5), dict(params=[fg.sh], lr=0.05)])
    for it in range(60):
        i = torch.randint(0, len(o), (1024,), generator=gen)
        loss = F.mse_loss(render_rays(fg, o[i], d[i], fcfg)['rgb'], rgb[i]); opt.zero_grad(); loss.backward(); opt.step()
        if it == 20: prune(fg, 0.5, fcfg)
    def db(g): return np.mean([psnr(render_image(g, c, val['H'], val['W'], val['focal'], cfg=fcfg), t) for c, t in zip(val['c2w'], val['images'])])
    ref = db(fg)
    old = VoxelGrid(fg.resolution, fg.scene_bounds, fg.sh_degree).requires_grad_(False)
    with torch.no_grad():
        k_old = fg.occupancy & (fg.density > 1e-4)
        old.density.copy_(torch.where(k_old, fg.density, torch.zeros(()))); old.sh.copy_(fg.sh * k_old[..., None, None]); old.occupancy.copy_(k_old)
    fit = []
    for label, grid, kw in (('every occupied voxel, float32 (tolerance None)', fg, dict(tolerance=None)),
                            ('render-exact, float32 (tolerance 0: save_plenoxel_vdb default)', fg, dict()),
                            ('render-exact, half (save_plenoxel_vdb half=True)', fg, dict(half=True)),
                            ('seed defaults (NeuralVDBConfig(): half, tolerance 1e-4)', fg, None),
                            ('old rule: density > 1e-4 only, float32', old, dict(tolerance=None))):
        f = tmp / 'fit.vdb'
        if kw is None: NeuralVDBManager().export_plenoxel_to_vdb(grid, f, fcfg)
        else: save_plenoxel_vdb(grid, f, model_config=fcfg, **kw)
        back = load_plenoxel_vdb(f)
        fit.append((label, int(back.occupancy.sum()), f.stat().st_size / 1e6, db(back) - ref))

    info = run_info()
    cmd = ' '.join(['.venv/bin/python', 'benchmarks/bench_vdb.py', *(argv if argv is not None else sys.argv[1:])])
    L = [f'# VDB storage benchmark', '', f'Command: `{cmd}`  ',
         f'Machine: {platform.node()} ({info["device"]}, shared with other jobs), {info["platform"]}, python {info["python"]}, '
         f'numpy {info["numpy"]}, libopenvdb {V.vdb_capabilities()["library_version"]}  ', f'Date: {info["time"]}', '',
         f'Volume: {n}^3 float32 ({n ** 3 * 4 / 1e6:.1f} MB dense), a clustered positive field (smoothed noise, exponential values, max 1) '
         f'with the given fraction of non-zero voxels; background 0. `tolerance`: voxels with value <= tolerance are not stored (lossy: '
         f'max abs error = tolerance). Sizes in MB (10^6 bytes); ratios < 1 mean the VDB file is smaller. Times: median of {R} runs.', '',
         '## File size', '', '| occupancy | tolerance | format | stored voxels | size MB | vs .npy | vs .npz | max abs error |', '|---|---|---|---|---|---|---|---|']
    for r in rows: L.append(f'| {r[0]} | {r[1]} | {r[2]} | {r[3]:,} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.2f} | {r[7]:.2g} |')
    L += ['', '## Save / load time (tolerance 0)', '', '| occupancy | format | save s | load s | save vs npy | save vs npz | load vs npy | load vs npz |', '|---|---|---|---|---|---|---|---|']
    for r in speed: L.append(f'| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.2f} |')
    L += ['', f'## Plenoxel grid ({pn}^3, sh_degree 2: 28 float channels, {int(g.occupancy.sum()):,} occupied voxels = '
          f'{float(g.occupancy.float().mean()):.1%}), NeuralVDB default tolerance 1e-4', '',
          '| format | size MB | vs torch.save | save s | load s |', '|---|---|---|---|---|']
    for r in pl: L.append(f'| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]} |')
    L += ['', f'## Plenoxel export of a grid fitted to real views', '',
          f'nerf_lego_small, {fg.resolution[0]}^3, sh_degree 1, 60 Adam steps at 50x50 with one pruning: {int(fg.occupancy.sum()):,} occupied '
          f'voxels, {int((fg.density[fg.occupancy] <= 1e-4).sum()):,} of them with density <= 1e-4. The in-memory grid renders the two '
          f'held-out views at {ref:.3f} dB (mean PSNR); each file is loaded back and rendered the same way.', '',
          '| export | stored voxels | size MB | PSNR vs in-memory grid (dB) |', '|---|---|---|---|']
    for r in fit: L.append(f'| {r[0]} | {r[1]:,} | {r[2]:.3f} | {r[3]:+.4f} |')
    lossless = [r for r in rows if r[1] == 0.0 and r[2] == 'zip']
    half = [r for r in rows if r[1] == 0.0 and r[2] == 'zip +half']
    L += ['', '## Findings', '',
          f'* Lossless (float32, zip), the VDB file is {min(r[5] for r in lossless):.3f}-{max(r[5] for r in lossless):.3f} x the dense .npy '
          f'and {min(r[6] for r in lossless):.2f}-{max(r[6] for r in lossless):.2f} x the compressed .npz (occupancies 1 %, 10 %, 50 %): '
          'zlib over a dense array of mostly zeros is hard to beat for pure size; what VDB adds is a sparse, transform-carrying file '
          'that Blender/Houdini open directly and that reads without inflating the background.',
          f'* Half floats (error <= 2^-12 of max here) bring it to {min(r[6] for r in half):.2f}-{max(r[6] for r in half):.2f} x the .npz; '
          'a tolerance of 1e-2 (values below it dropped) to well under the .npz at every occupancy.',
          '* zip and blosc give files within a few per cent of each other; blosc writes several times faster at high occupancy, '
          'hence compression_level 1-4 -> blosc, 5-9 -> zip. OpenVDB fixes both codecs\' levels, so levels within a band give identical files.',
          '* Every grid costs a fixed ~10 kB of tree structure (root and internal-node masks), visible in tiny files (LOD levels of a few voxels).',
          f'* A fitted Plenoxel grid: storing only density > 1e-4 (the first export rule) renders {fit[-1][3]:+.2f} dB against the grid, because '
          'the renderer interpolates raw densities and the dropped non-positive voxels were pulling their neighbours down. The render-aware '
          f'rule keeps them where a render can see them: float32 renders bit for bit ({fit[1][3]:+.4f} dB) at {fit[1][2] / fit[0][2]:.2f} x the size '
          f'of storing every occupied voxel; half floats cost {fit[2][3]:+.4f} dB.']
    Path(a.out).write_text('\n'.join(L) + '\n')
    print('\n'.join(L))


if __name__ == '__main__':
    main()
