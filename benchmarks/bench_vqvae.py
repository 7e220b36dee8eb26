"""Benchmarks of the sparse SDF VQ-VAE (figures in benchmarks/vqvae.md).

    prepare  organ SDFs of a labelled CT at one resolution, some organs held out:
             .venv/bin/python benchmarks/bench_vqvae.py prepare --seg ../shared/data/ct/example_seg.nii.gz --out outputs/vqvae_bench/data
    quality  two stages (stage 1 then stage 2) against one stage from scratch, within the same training-time budget, both
             scored on the held-out organs (IoU, Chamfer, codebook utilisation):
             .venv/bin/python benchmarks/bench_vqvae.py quality --data outputs/vqvae_bench/data --out outputs/vqvae_bench --budget 900
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


def run_cmd(args, log):
    "Run `medvox args`, logging to `log`; returns wall and CPU seconds of the process."
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, 'w') as f: p = subprocess.run([MEDVOX, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, MEDVOX_PROGRESS='0'))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode: raise SystemExit(f'medvox {" ".join(map(str, args))} failed ({p.returncode}); see {log}')
    return dict(wall_s=time.time() - t0, cpu_s=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))


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


def quality(data, out, budget=900.0, stage1_share=0.1, config='configs/vae/sparse_sdf_vqvae_64.json', seed=0, arms=('two_stage', 'single_stage')):
    "Two-stage (stage 1 for stage1_share of the budget, then stage 2) against single-stage from scratch, same budget."
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots = f'{data/"train"},{data/"heldout"}'
    held = sorted(f.name.rsplit('_r', 1)[0] for f in (data/'heldout').glob('*.npz'))
    common = ['--data_dir', roots, '--seed', seed, '--config', ROOT/config, '--set', f'dataset.args.val_instances={json.dumps(held)}',
              '--set', 'trainer.args.i_val=0', '--set', 'trainer.args.max_steps=1000000']
    rec = dict(command=' '.join(sys.argv), budget_s=budget, stage1_share=stage1_share, config=config, heldout=held, loadavg_start=loadavg())
    if 'two_stage' in arms:
        s1, s2 = out/'two_stage'/'stage1', out/'two_stage'/'stage2'
        for d in (s1, s2): shutil.rmtree(d, ignore_errors=True)
        t1 = run_cmd(['train-vqvae', *common, '--output_dir', s1, '--set', 'trainer.args.training_stage=1', '--set', 'trainer.args.init_from=null',
                      '--set', 'trainer.args.loss_type=l1', '--set', 'trainer.args.learning_rate=0.001', '--set', 'trainer.args.lr_scheduler=null',
                      '--set', f'trainer.args.time_limit_s={budget * stage1_share}'], out/'two_stage_stage1.log')
        used = json.loads((s1/'results.json').read_text())
        t2 = run_cmd(['train-vqvae', *common, '--output_dir', s2, '--load_dir', s1, '--set', 'trainer.args.training_stage=2',
                      '--set', f'trainer.args.time_limit_s={budget - used["train_time_s"]}'], out/'two_stage_stage2.log')
        rec['two_stage'] = dict(stage1=dict(t1, **{k: used[k] for k in ('step', 'train_time_s')}),
                                stage2=dict(t2, **{k: v for k, v in json.loads((s2/'results.json').read_text()).items() if k in ('step', 'train_time_s')}),
                                scores=score(s2, data/'heldout', data/'train'))
    if 'single_stage' in arms:
        s = out/'single_stage'
        shutil.rmtree(s, ignore_errors=True)
        t = run_cmd(['train-vqvae', *common, '--output_dir', s, '--set', 'trainer.args.training_stage=2', '--set', 'trainer.args.init_from=scratch',
                     '--set', f'trainer.args.time_limit_s={budget}'], out/'single_stage.log')
        rec['single_stage'] = dict(t, **{k: v for k, v in json.loads((s/'results.json').read_text()).items() if k in ('step', 'train_time_s')},
                                   scores=score(s, data/'heldout', data/'train'))
    rec['loadavg_end'] = loadavg()
    (out/'quality.json').write_text(json.dumps(rec, indent=1, default=float))
    for arm in arms:
        if arm in rec:
            print(f'\n## {arm}\n'); print(rec[arm]['scores']['heldout']['table'])
            print(f"training organs: {rec[arm]['scores']['train']['summary']}")
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
    s = sub.add_parser('speed'); s.add_argument('--out', default='outputs/vqvae_bench/speed.json')
    s.add_argument('--resolutions', type=int, nargs='+', default=[64, 128, 256]); s.add_argument('--backends', nargs='+', default=['torch', 'spconv'])
    s.add_argument('--steps', type=int, default=3); s.add_argument('--attn', default='swin'); s.add_argument('--batch', type=int, default=4)
    e = sub.add_parser('evaluate'); e.add_argument('--run', required=True); e.add_argument('--data', required=True)
    a = p.parse_args()
    if a.cmd == 'prepare': prepare(a.seg, a.out, a.resolution, a.heldout)
    elif a.cmd == 'quality': quality(a.data, a.out, a.budget, a.stage1_share, a.config, a.seed, tuple(a.arms))
    elif a.cmd == 'speed': speed(a.out, a.resolutions, a.backends, a.steps, a.attn, a.batch)
    else: print(score(a.run, a.data)['heldout']['table'])
