"""Benchmarks of the 3D latent diffusion stages (`medvox ldm`), recorded in benchmarks/ldm.md.

    python benchmarks/bench_ldm.py chain            # fast_dev_run chain through the CLI at 32³ (bar: <= 90 s on 2 cores)
    python benchmarks/bench_ldm.py ddim             # DDIM 50 steps vs DDPM 1000 steps, same model (bar: >= 10x)
    python benchmarks/bench_ldm.py cpu32 [--budget-s 1200]   # the CPU run at 32³: data, both stages, evaluation (bar: 20 min)
    python benchmarks/bench_ldm.py size64           # the same config at 64³: step time and peak memory per stage
    python benchmarks/bench_ldm.py clamp RUN_DIR    # a cpu32 run's autoencoder checkpoints scored with and without the clamp at 0

Each part prints its figures and a JSON line (`RESULT {...}`); `--out DIR` keeps the run folders.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
MEDVOX = Path(sys.executable).parent/'medvox'
TINY = ROOT/'configs'/'ldm'/'ldm_tiny.yaml'
ENV = dict(os.environ, MEDVOX_PROGRESS='0', MPLBACKEND='Agg')   # OMP_NUM_THREADS is set from --threads below

def sh(*args, check=True, cpu: dict|None=None):
    "Run a command; returns (completed process, wall seconds); `cpu` collects the child's CPU seconds (user + system)."
    t0, u0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([str(a) for a in args], env=ENV, capture_output=True, text=True)
    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None: cpu[str(args[2]) if len(args) > 2 else str(args[0])] = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
    if check and r.returncode: sys.exit(f'{" ".join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-3000:]}')
    return r, time.perf_counter() - t0

def load():
    return float(os.getloadavg()[0])

def config(out: Path, data: Path, voxel_size=32, **sections) -> Path:
    "The tiny config with its paths in `out` and `sections` merged in."
    c = yaml.safe_load(TINY.read_text())
    c['data'].update(train_data_dir=str(data/'train'), val_data_dir=str(data/'val'), voxel_size=voxel_size)
    for s in ('autoencoder', 'diffusion'):
        c[s]['checkpoints']['output_dir'] = str(out/'outputs'/s); c[s]['logging']['log_dir'] = str(out/'logs'/s)
    c['diffusion']['checkpoints']['autoencoder_path'] = str(out/'outputs'/'autoencoder'/'best_model.pt')
    c['sampling']['output_dir'] = str(out/'outputs'/'samples')
    def merge(a, b):
        for k, v in b.items(): a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) else v
        return a
    merge(c, sections)
    p = out/'ldm_config.yaml'; out.mkdir(parents=True, exist_ok=True); p.write_text(yaml.safe_dump(c, sort_keys=False))
    return p

def make_data(out: Path, n_train, n_val, regions, voxel_size=32):
    "Simulated acquisitions as NIfTI (medvox ldm make-data), in a folder named by its settings (made once)."
    d = out/f'data_t{n_train}_v{n_val}_r{regions}_{voxel_size}'
    if not (d/'samples.csv').exists():
        sh(MEDVOX, 'ldm', 'make-data', '--output_dir', d, '--n-train', n_train, '--n-val', n_val, '--regions-per-field', regions, '--voxel-size', voxel_size)
    return d

def bench_chain(out: Path, repeats: int=2) -> dict:
    "The fast_dev_run chain through the CLI (three processes), data made beforehand."
    data = make_data(out, 2, 1, 4)
    times = []
    for k in range(repeats):
        run = out/f'chain{k}'
        cfg = config(run, data)
        t, cpu, l0 = {}, {}, load()
        for act in ('train-autoencoder', 'train-diffusion'): t[act] = sh(MEDVOX, 'ldm', act, '--config', cfg, cpu=cpu)[1]
        t['generate'] = sh(MEDVOX, 'ldm', 'generate', '--config', cfg, '--output_dir', run/'outputs'/'samples', cpu=cpu)[1]
        t['total'], t['cpu_s'], t['load'] = sum(t.values()), sum(cpu.values()), (l0 + load()) / 2
        times.append(t)
        print(f'chain {k}: ' + ', '.join(f'{a} {v:.1f} s' for a, v in t.items() if a not in ('cpu_s', 'load'))
              + f" (CPU time of the three processes {t['cpu_s']:.1f} s; load average {t['load']:.1f})", flush=True)
    tot = sorted(t['total'] for t in times)
    return dict(part='chain', runs=times, median_total_s=tot[len(tot)//2], load=load())

def bench_ddim(out: Path, repeats: int=3) -> dict:
    "Sampling time of one volume: DDPM with 1000 steps vs DDIM with 50, same UNet and autoencoder (the tiny config's)."
    import torch
    from medvox_nb.ldm.pipeline import load_ldm_config
    from medvox_nb.ldm.autoencoder import build_autoencoder
    from medvox_nb.ldm.diffusion import build_unet, build_scheduler, sample_volumes
    cfg = load_ldm_config(TINY)
    torch.manual_seed(0)
    ae, unet = build_autoencoder(cfg.autoencoder).eval(), build_unet(cfg.diffusion).eval()
    latent = [cfg.autoencoder.latent_channels] + [32 // cfg.autoencoder.downsampling]*3
    res = {}
    for name, sampler, steps, reps in (('ddim50', 'ddim', 50, repeats), ('ddpm1000', 'ddpm', 1000, max(1, repeats - 1))):
        sch = build_scheduler(cfg.diffusion.scheduler, sampler, steps)
        ts = []
        for r in range(reps):
            t0 = time.perf_counter(); sample_volumes(ae, unet, sch, latent, 1.0, 1, seed=r, batch_size=1); ts.append(time.perf_counter() - t0)
        res[name] = sorted(ts)[len(ts)//2]
        print(f'{name}: {res[name]:.2f} s per volume (median of {reps})', flush=True)
    return dict(part='ddim', **res, speedup=res['ddpm1000'] / res['ddim50'], load=load())

CPU32 = dict(  # the CPU run: the tiny config's networks, trained for real
    autoencoder=dict(training=dict(fast_dev_run=False, n_epochs=1000, batch_size=2, learning_rate=2e-3, autoencoder_warm_up_n_epochs=4,
                                   adv_weight=0.005, val_interval=1, save_interval=1),
                     logging=dict(log_interval=10)),
    diffusion=dict(training=dict(fast_dev_run=False, n_epochs=1000, batch_size=8, learning_rate=2e-3, val_interval=4, save_interval=4,
                                 generate_samples_interval=1000, num_samples_to_generate=4),
                   logging=dict(log_interval=10)),
    sampling=dict(sampler='ddim', num_inference_steps=50, batch_size=16, num_samples=16))

def bench_cpu32(out: Path, budget_s: float=1200., ae_share: float=0.55, diff_share: float=0.25) -> dict:
    "Data, autoencoder, diffusion, evaluation at 32³ on the CPU within `budget_s` (the stages get time limits)."
    t0 = time.perf_counter()
    data = make_data(out, 24, 6, 8)
    t_data = time.perf_counter() - t0
    sec = json.loads(json.dumps(CPU32))
    sec['autoencoder']['training']['time_limit_s'] = ae_share * budget_s
    sec['diffusion']['training']['time_limit_s'] = diff_share * budget_s
    run = out/f'run_{int(budget_s)}'
    cfg = config(run, data, **sec)
    r_ae, t_ae = sh(MEDVOX, 'ldm', 'train-autoencoder', '--config', cfg); print(r_ae.stdout.strip(), f'({t_ae:.0f} s)', flush=True)
    r_df, t_df = sh(MEDVOX, 'ldm', 'train-diffusion', '--config', cfg); print(r_df.stdout.strip(), f'({t_df:.0f} s)', flush=True)
    r_ev, t_ev = sh(MEDVOX, 'ldm', 'evaluate', '--config', cfg, '--output_dir', run/'evaluation'); print(r_ev.stdout, f'({t_ev:.0f} s)', flush=True)
    m = json.loads((run/'evaluation'/'metrics.json').read_text())
    total = time.perf_counter() - t0
    real = real_reconstruction(run/'outputs'/'autoencoder'/'best_model.pt')   # outside the 20 minutes: an extra look
    return dict(part='cpu32', total_s=total, data_s=t_data, autoencoder_s=t_ae, diffusion_s=t_df, evaluate_s=t_ev,
                autoencoder=m['autoencoder'], generation=m.get('generation'), autoencoder_step=m['autoencoder_step'],
                diffusion_step=m.get('diffusion_step'), table=m['table'], real_acquisitions=real, load=load())

SHARED = Path(os.environ.get('MEDVOX_SHARED_DATA', ROOT.parent/'shared'/'data'))/'smlm'

def real_reconstruction(ae_ckpt: Path, voxel_size=32, region_size=(6400., 6400., 1600.), regions: int=8) -> list:
    "The trained autoencoder on regions of the real acquisitions (../shared/data/smlm): the simulated-to-real gap."
    import numpy as np, torch
    from medvox_nb.pointcloud import read_points
    from medvox_nb.voxelize import Voxelizer
    from medvox_nb.ldm import regions as R
    from medvox_nb.ldm.diffusion import read_stage_checkpoint, autoencoder_from_bundle
    from medvox_nb.ldm.autoencoder import reconstruction_metrics, to_data_range
    if not SHARED.exists(): return []
    b = read_stage_checkpoint(ae_ckpt, 'autoencoder', 'autoencoder', 'autoencoder', '')
    ae, scale = autoencoder_from_bundle(b), float(b['misc']['extra']['intensity_scale'])
    vz = Voxelizer(voxel_size, 'gaussian', 1.0, volume_dims=region_size, padding=(0, 0, 0), origin='zero')
    rows = []
    for f in sorted(SHARED.glob('*.csv')):
        pts = read_points(f)
        regs, _ = R.sample_regions(pts, R.RegionsConfig(region_size=region_size, num_regions=regions, min_points=500, target_points=2048), name=f.name)
        if not regs: continue
        x = vz([r.points for r in regs]).voxels[:, None].float() / scale
        with torch.no_grad(): m = reconstruction_metrics(x, to_data_range(ae.reconstruct(x).float()))
        z = reconstruction_metrics(x, torch.zeros_like(x))
        rows.append(dict(acquisition=f.stem, n=len(regs), psnr=float(m['psnr'].mean()), ssim=float(m['ssim'].mean()),
                         mass_error=float(m['mass_error'].mean()), zero_ssim=float(z['ssim'].mean())))
        print(f"real {f.stem}: {len(regs)} regions, PSNR {rows[-1]['psnr']:.2f} dB, SSIM {rows[-1]['ssim']:.4f} (all-zero {rows[-1]['zero_ssim']:.4f}), mass error {rows[-1]['mass_error']:.3f}", flush=True)
    return rows

def _step_probe(stage: str, cfg_path: str, steps: int):
    "In a fresh process: time `steps` training steps of `stage` after one warm-up step; print peak RSS."
    import torch
    from medvox_nb.ldm.pipeline import load_ldm_config
    from medvox_nb.ldm.autoencoder import AutoencoderTrainer
    from medvox_nb.ldm.diffusion import DiffusionTrainer
    cfg = load_ldm_config(cfg_path)
    tr = (AutoencoderTrainer(cfg.data, cfg.autoencoder, cfg.device, cfg.seed) if stage == 'autoencoder'
          else DiffusionTrainer(cfg.data, cfg.diffusion, cfg.sampling, cfg.device, cfg.seed))
    tr.setup()
    for m in tr.models.values(): m.train()
    tr.train_step(tr.next_batch()); tr.step += 1                           # warm-up (lazy imports, allocator)
    ts = []
    for _ in range(steps):
        b = tr.next_batch(); t0 = time.perf_counter(); tr.train_step(b); ts.append(time.perf_counter() - t0); tr.step += 1
    if stage == 'autoencoder': tr.save_checkpoint(best=True)               # the diffusion probe encodes with it
    print('RESULT ' + json.dumps(dict(stage=stage, step_s=sorted(ts)[len(ts)//2], steps=steps, batch_size=tr.cfg.batch_size,
                                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, threads=torch.get_num_threads())))

def bench_size64(out: Path, steps: int=3) -> dict:
    "The CPU run's config at 64³: median step time and peak resident memory of each stage (a fresh process each)."
    data = make_data(out, 2, 1, 4, voxel_size=64)
    sec = json.loads(json.dumps(CPU32))
    cfg = config(out/'run64', data, voxel_size=64, **sec)
    res = {}
    for stage in ('autoencoder', 'diffusion'):
        r, _ = sh(sys.executable, __file__, '_probe', stage, cfg, steps)
        res[stage] = json.loads(next(l for l in r.stdout.splitlines() if l.startswith('RESULT '))[7:])
        print(f"{stage} at 64³: {res[stage]['step_s']:.2f} s per step (batch {res[stage]['batch_size']}), peak RSS {res[stage]['peak_rss_mb']:.0f} MB", flush=True)
    return dict(part='size64', **res, load=load())

def bench_clamp(run: Path) -> dict:
    "The autoencoder checkpoints of a cpu32 run folder (`--out DIR` gives `DIR/run_<budget>`) on its held-out validation volumes, raw and clamped at 0."
    import numpy as np, torch
    from medvox_nb.ldm.diffusion import read_stage_checkpoint, autoencoder_from_bundle
    from medvox_nb.ldm.autoencoder import reconstruction_metrics, to_data_range, iterate_volumes, LDMDataConfig, make_datasets, build_section
    cfg = yaml.safe_load((run/'ldm_config.yaml').read_text())
    sets, res = make_datasets(build_section(LDMDataConfig, cfg['data'], 'data')), {}
    for name in ('best_model.pt', 'latest_checkpoint.pt'):
        b = read_stage_checkpoint(run/'outputs'/'autoencoder'/name, 'autoencoder', 'autoencoder', 'autoencoder', '')
        ae = autoencoder_from_bundle(b); sets.val.scale = float(b['misc']['extra']['intensity_scale'])
        raw, cl, neg = [], [], []
        with torch.no_grad():
            for x in iterate_volumes(sets.val, 8):
                r = ae.reconstruct(x).float()
                raw.append(reconstruction_metrics(x, r)); cl.append(reconstruction_metrics(x, to_data_range(r)))
                neg.append((r.clamp_max(0).abs().flatten(1).sum(1) / r.abs().flatten(1).sum(1).clamp_min(1e-12)).numpy())
        f = lambda ps, k: float(np.concatenate([q[k] for q in ps]).mean())
        res[name] = dict(step=b['misc'].get('step'), negative_share=float(np.concatenate(neg).mean()),
                         raw=dict(ssim=f(raw, 'ssim'), psnr=f(raw, 'psnr'), mass_error=f(raw, 'mass_error')),
                         clamped=dict(ssim=f(cl, 'ssim'), psnr=f(cl, 'psnr'), mass_error=f(cl, 'mass_error')))
        d = res[name]
        print(f"{name} (step {d['step']}): negative share of |mass| {d['negative_share']:.3f}; raw SSIM {d['raw']['ssim']:.4f} PSNR {d['raw']['psnr']:.2f} dB "
              f"mass error {d['raw']['mass_error']:.3f} | clamped SSIM {d['clamped']['ssim']:.4f} PSNR {d['clamped']['psnr']:.2f} dB mass error {d['clamped']['mass_error']:.3f}", flush=True)
    return dict(part='clamp', run=str(run), **res)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('part', choices=['chain', 'ddim', 'cpu32', 'size64', 'clamp', 'all', '_probe'])
    p.add_argument('args', nargs='*')
    p.add_argument('--out', default=None, help='keep the run folders here (default: a temporary folder)')
    p.add_argument('--budget-s', type=float, default=1200.)
    p.add_argument('--threads', type=int, default=1, help='torch threads of every process (default 1: on a shared, loaded 2-core machine '
                   'two OpenMP threads spin at barriers and run 3-4x slower than one)')
    a = p.parse_args()
    ENV['OMP_NUM_THREADS'] = str(a.threads)
    if a.part != '_probe': os.environ['OMP_NUM_THREADS'] = str(a.threads)
    if a.part == '_probe': _step_probe(a.args[0], a.args[1], int(a.args[2])); sys.exit(0)
    if a.part == 'clamp': print('RESULT ' + json.dumps(bench_clamp(Path(a.args[0])), default=str), flush=True); sys.exit(0)
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix='bench_ldm_'))
    print(f'load average {load():.2f} on {os.cpu_count()} cores, {a.threads} torch thread(s) per process; run folders in {out}', flush=True)
    parts = ['chain', 'ddim', 'size64', 'cpu32'] if a.part == 'all' else [a.part]
    fns = dict(chain=bench_chain, ddim=bench_ddim, size64=bench_size64, cpu32=lambda o: bench_cpu32(o, a.budget_s))
    for part in parts:
        r = fns[part](out)
        print('RESULT ' + json.dumps(r, default=str), flush=True)
