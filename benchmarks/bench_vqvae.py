"""Benchmarks of the sparse SDF VQ-VAE (figures in benchmarks/vqvae.md).

    prepare  organ SDFs of a labelled CT at one resolution, some organs held out:
             .venv/bin/python benchmarks/bench_vqvae.py prepare --seg ../shared/data/ct/example_seg.nii.gz --out outputs/vqvae_bench/data
    quality  two stages (stage 1 then stage 2) against one stage from scratch, within the same training-time budget, both
             scored on the held-out organs (IoU, Chamfer, codebook utilisation):
             .venv/bin/python benchmarks/bench_vqvae.py quality --data outputs/vqvae_bench/data --out outputs/vqvae_bench --budget 900
             (`--config configs/vae/sparse_sdf_vqvae_64_1k.json` for the codebook sized to the data; `--parallel --threads 1`
             runs the two arms at the same time, one core each, so that both see the same load on a shared machine)
    speed    step time and peak memory per resolution (64, 128, 256) and sparse-convolution backend, against band voxels:
             .venv/bin/python benchmarks/bench_vqvae.py speed --out outputs/vqvae_bench/speed.json
    evaluate a run folder on a folder of sparse SDFs:
             .venv/bin/python benchmarks/bench_vqvae.py evaluate --run outputs/vqvae_bench/two_stage/stage2 --data outputs/vqvae_bench/data/heldout

Every figure is written as JSON next to the runs, with the command, the machine and the load average (the machine is shared:
absolute times drift with the load; the two arms of the quality comparison run one after the other under the same budget).
"""
import argparse, json, os, resource, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDVOX = str(Path(sys.executable).parent/'medvox')
HELDOUT = ['kidney_left', 'adrenal_gland_left', 'vertebrae_l1', 'iliopsoas_left', 'rib_left_9', 'rib_right_11', 'autochthon_left', 'duodenum']


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prepare(seg, out, resolution=64, heldout=HELDOUT, min_voxels=8, threshold_factor=4.0):
    "One narrow-band SDF per organ label of `seg` (fitted to the grid), in out/train and out/heldout."
    import numpy as np, nibabel as nib
    from medvox_nb.ct.preprocess import totalseg_organ_map
    from medvox_nb.sdf.compute import sparse_sdf_from_mask, save_sparse_sdf
    img = nib.load(str(seg)); s = np.asarray(img.dataobj)
    names = {int(k): v['name'] for k, v in totalseg_organ_map()['organ_labels'].items()}
    out = Path(out); t0 = time.time(); rows = []
    for label in np.unique(s)[1:]:
        m = s == label
        if m.sum() < min_voxels: continue
        name = names.get(int(label), f'label{int(label)}')
        d = sparse_sdf_from_mask(m, resolution, threshold_factor, affine=img.affine, fit='shape')
        save_sparse_sdf(out/('heldout' if name in heldout else 'train')/f'{name}_r{resolution}.npz', d)
        rows.append((name, int(m.sum()), len(d['sparse_index'])))
    print(f'{len(rows)} organs -> {out} ({time.time() - t0:.1f} s); held out: {", ".join(n for n, _, _ in rows if n in heldout)}')
    return rows


def run_cmd(args, log, env=None):
    "Run `medvox args`, logging to `log`; returns wall and CPU seconds of that process alone (`os.wait4`, so arms may run at once)."
    t0 = time.time()
    with open(log, 'w') as f:
        p = subprocess.Popen([MEDVOX, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, MEDVOX_PROGRESS='0', **(env or {})))
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode: raise SystemExit(f'medvox {" ".join(map(str, args))} failed ({p.returncode}); see {log}')
    return dict(wall_s=time.time() - t0, cpu_s=ru.ru_utime + ru.ru_stime, loadavg_end=loadavg())


class LoadSampler:
    "Samples the 1-minute load average every `every` seconds in a thread (the machine is shared: the record says how busy it was)."
    def __init__(self, every=30.0):
        import threading
        self.every, self.samples, self.stop = every, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
    def run(self):
        t0 = time.time()
        while True:
            self.samples.append((round(time.time() - t0), loadavg()[0]))
            if self.stop.wait(self.every): break
    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *a): self.stop.set(); self.thread.join()
    def summary(self):
        v = [x for _, x in self.samples]
        return dict(mean=round(sum(v) / len(v), 2), min=min(v), max=max(v), samples=self.samples) if v else {}


def score(run, heldout_dir, train_dir=None):
    "Evaluate the run's last checkpoint on the held-out organs (and, for reference, on the training organs)."
    from medvox_nb.sdf.compute import load_sparse_sdf
    from medvox_nb.vqvae.evaluate import load_run, evaluate, evaluation_table
    model, _ = load_run(run)
    out = {}
    for what, d in (('heldout', heldout_dir), ('train', train_dir)):
        if d is None: continue
        files = sorted(Path(d).glob('*.npz'))
        res = evaluate(model, [load_sparse_sdf(f) for f in files], names=[f.name.rsplit('_r', 1)[0] for f in files], keep_shapes=False)
        out[what] = dict(summary=res['summary'], rows=res['rows'], table=evaluation_table(res))
    return out


def quality(data, out, budget=900.0, stage1_share=0.1, config='configs/vae/sparse_sdf_vqvae_64.json', seed=0, arms=('two_stage', 'single_stage'),
            parallel=False, threads=None):
    """Two-stage (stage 1 for stage1_share of the budget, then stage 2) against single-stage from scratch, same budget.
    `parallel`: the arms run at the same time (each with `threads` torch threads), so both see the same load on a shared machine."""
    from concurrent.futures import ThreadPoolExecutor
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots = f'{data/"train"},{data/"heldout"}'
    held = sorted(f.name.rsplit('_r', 1)[0] for f in (data/'heldout').glob('*.npz'))
    common = ['--data_dir', roots, '--seed', seed, '--config', ROOT/config, '--set', f'dataset.args.val_instances={json.dumps(held)}',
              '--set', 'trainer.args.i_val=0', '--set', 'trainer.args.max_steps=1000000']
    env = {k: str(threads) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')} if threads else None
    rec = dict(command=' '.join(sys.argv), budget_s=budget, stage1_share=stage1_share, config=config, heldout=held, parallel=parallel,
               threads=threads, cpu_count=os.cpu_count(), loadavg_start=loadavg())

    def two_stage():
        s1, s2 = out/'two_stage'/'stage1', out/'two_stage'/'stage2'
        for d in (s1, s2): shutil.rmtree(d, ignore_errors=True)
        t1 = run_cmd(['train-vqvae', *common, '--output_dir', s1, '--set', 'trainer.args.training_stage=1', '--set', 'trainer.args.init_from=null',
                      '--set', 'trainer.args.loss_type=l1', '--set', 'trainer.args.learning_rate=0.001', '--set', 'trainer.args.lr_scheduler=null',
                      '--set', f'trainer.args.time_limit_s={budget * stage1_share}'], out/'two_stage_stage1.log', env)
        used = json.loads((s1/'results.json').read_text())
        t2 = run_cmd(['train-vqvae', *common, '--output_dir', s2, '--load_dir', s1, '--set', 'trainer.args.training_stage=2',
                      '--set', f'trainer.args.time_limit_s={budget - t1["wall_s"]}'], out/'two_stage_stage2.log', env)
        r2 = json.loads((s2/'results.json').read_text())
        return dict(stage1=dict(t1, **{k: used[k] for k in ('step', 'train_time_s')}), stage2=dict(t2, **{k: r2[k] for k in ('step', 'train_time_s')}),
                    steps=used['step'] + r2['step'], wall_s=t1['wall_s'] + t2['wall_s'], cpu_s=t1['cpu_s'] + t2['cpu_s'], run=str(s2))

    def single_stage():
        s = out/'single_stage'
        shutil.rmtree(s, ignore_errors=True)
        t = run_cmd(['train-vqvae', *common, '--output_dir', s, '--set', 'trainer.args.training_stage=2', '--set', 'trainer.args.init_from=scratch',
                     '--set', f'trainer.args.time_limit_s={budget}'], out/'single_stage.log', env)
        r = json.loads((s/'results.json').read_text())
        return dict(t, **{k: r[k] for k in ('step', 'train_time_s')}, steps=r['step'], run=str(s))

    fns = dict(two_stage=two_stage, single_stage=single_stage)
    with LoadSampler() as load:
        if parallel:
            with ThreadPoolExecutor(len(arms)) as ex:
                futs = {a: ex.submit(fns[a]) for a in arms}
                for a, f in futs.items(): rec[a] = f.result()
        else:
            for a in arms:
                with LoadSampler() as la: rec[a] = fns[a]()
                rec[a]['loadavg'] = la.summary()
    rec['loadavg_training'] = load.summary()
    (out/'quality.json').write_text(json.dumps(rec, indent=1, default=float))                   # kept if scoring fails
    for a in arms: rec[a]['scores'] = score(rec[a]['run'], data/'heldout', data/'train')     # scoring is not part of the budget
    rec['loadavg_end'] = loadavg()
    (out/'quality.json').write_text(json.dumps(rec, indent=1, default=float))
    for arm in arms:
        print(f"\n## {arm}: {rec[arm]['steps']} steps, {rec[arm]['wall_s']:.0f} s wall, {rec[arm]['cpu_s']:.0f} s CPU\n"); print(rec[arm]['scores']['heldout']['table'])
        print(f"held-out: {rec[arm]['scores']['heldout']['summary']}\ntraining organs: {rec[arm]['scores']['train']['summary']}")
    print(f"load average during training: {rec['loadavg_training']}")
    return rec


def speed_one(resolution, backend, steps, attn, batch):
    "Runs in a fresh process: step time and peak RSS of training steps at one resolution (organ SDFs of the shared CT)."
    import numpy as np, torch, nibabel as nib
    from medvox_nb.sdf.compute import sparse_sdf_from_mask
    from medvox_nb.vqvae import model as vm
    from medvox_nb.vqvae.train import VQVAEConfig, reconstruction_loss
    seg = nib.load(str(ROOT.parent/'shared'/'data'/'ct'/'example_seg.nii.gz')); s = np.asarray(seg.dataobj)
    organs = [1, 2, 5, 30, 86, 100, 117, 52][:batch]                 # spleen, kidney, liver, vertebra, autochthon, rib, cartilages, aorta
    shapes = [sparse_sdf_from_mask(s == l, resolution, 4.0, affine=seg.affine, fit='shape') for l in organs]
    cfg = VQVAEConfig.load(ROOT/'configs'/'vae'/'sparse_sdf_vqvae_64.json', [f'models.vqvae.args.resolution={resolution}',
                           f'models.vqvae.args.sparse_backend={backend}', f'models.vqvae.args.attn_mode={attn}'])
    torch.manual_seed(0)
    m = vm.SparseSDFVQVAE(**vars(cfg.model))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    b = vm.collate_sparse_sdf(shapes)
    times, base_rss = [], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(steps + 1):
        t0 = time.perf_counter()
        x = vm.as_sparse_tensor(b)
        out = m(x)
        tgt, _ = vm.band_targets(out['sdf'].coords, x)
        loss = reconstruction_loss(out['sdf'].feats[:, 0], tgt, out['sdf'].batch, x.batch_size, 'l1_l2')['recon'] + out['vq'] + out['commitment']
        loss.backward(); opt.step(); opt.zero_grad()
        if i: times.append(time.perf_counter() - t0)                   # the first step builds caches: not counted
    return dict(resolution=resolution, backend=m.backend, attn_mode=attn, batch=batch, band_voxels=len(b['coords']), latent_voxels=len(out['latent']),
                decoded_voxels=len(out['sdf']), step_s_median=float(np.median(times)), step_s_all=times,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_before_mb=base_rss / 1024, threads=torch.get_num_threads())


def speed(out, resolutions=(64, 128, 256), backends=('torch', 'spconv'), steps=3, attn='swin', batch=4):
    rows = []
    for r in resolutions:
        for be in backends:
            t0, la = time.time(), loadavg()
            p = subprocess.run([sys.executable, __file__, '_speed_one', str(r), be, str(steps), attn, str(batch)], capture_output=True, text=True)
            if p.returncode: print(p.stderr[-2000:]); continue
            row = json.loads(p.stdout.strip().splitlines()[-1]); row.update(loadavg=la, wall_s=time.time() - t0)
            rows.append(row)
            print(f"{r:5d}³ {row['backend']:7s} band {row['band_voxels']:8d}  latent {row['latent_voxels']:7d}  decoded {row['decoded_voxels']:8d}  "
                  f"step {row['step_s_median']:7.2f} s  peak RSS {row['peak_rss_mb']:7.0f} MB  (load {la[0]})", flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(dict(command=' '.join(sys.argv), rows=rows), indent=1))
    return rows


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '_speed_one':
        r, be, st, attn, batch = sys.argv[2:7]
        print(json.dumps(speed_one(int(r), be, int(st), attn, int(batch)))); sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    a = sub.add_parser('prepare'); a.add_argument('--seg', default=str(ROOT.parent/'shared'/'data'/'ct'/'example_seg.nii.gz'))
    a.add_argument('--out', required=True); a.add_argument('--resolution', type=int, default=64); a.add_argument('--heldout', nargs='*', default=HELDOUT)
    q = sub.add_parser('quality'); q.add_argument('--data', required=True); q.add_argument('--out', required=True)
    q.add_argument('--budget', type=float, default=900); q.add_argument('--stage1_share', type=float, default=0.1)
    q.add_argument('--config', default='configs/vae/sparse_sdf_vqvae_64.json'); q.add_argument('--seed', type=int, default=0)
    q.add_argument('--arms', nargs='+', default=['two_stage', 'single_stage'])
    q.add_argument('--parallel', action='store_true', help='run the arms at the same time (same load for both on a shared machine)')
    q.add_argument('--threads', type=int, default=None, help='torch threads per training process (OMP_NUM_THREADS)')
    s = sub.add_parser('speed'); s.add_argument('--out', default='outputs/vqvae_bench/speed.json')
    s.add_argument('--resolutions', type=int, nargs='+', default=[64, 128, 256]); s.add_argument('--backends', nargs='+', default=['torch', 'spconv'])
    s.add_argument('--steps', type=int, default=3); s.add_argument('--attn', default='swin'); s.add_argument('--batch', type=int, default=4)
    e = sub.add_parser('evaluate'); e.add_argument('--run', required=True); e.add_argument('--data', required=True)
    a = p.parse_args()
    if a.cmd == 'prepare': prepare(a.seg, a.out, a.resolution, a.heldout)
    elif a.cmd == 'quality': quality(a.data, a.out, a.budget, a.stage1_share, a.config, a.seed, tuple(a.arms), a.parallel, a.threads)
    elif a.cmd == 'speed': speed(a.out, a.resolutions, a.backends, a.steps, a.attn, a.batch)
    else: print(score(a.run, a.data)['heldout']['table'])
