"""Plenoxels on the real lego views: held-out PSNR at 200x200 against training time on this CPU.

    .venv/bin/python benchmarks/bench_plenoxels.py [--time-limit 600] [--out runs/bench_plenoxels] [--md benchmarks/plenoxels.md]

Trains on 56 of the 60 lego views in ../shared/data/nerf_lego (views 0, 15, 30, 45 held out), 200x200,
starting at 64^3 and upsampling to 128^3, for `--time-limit` seconds of training (validation time
excluded), validating on the held-out views along the way. Writes the figures to `--md`.
"""
import argparse, os, json, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from medvox_nb.core import run_info, save_config
from medvox_nb.plenoxel_trainer import NeuralVDBPlenoxelTrainer, PlenoxelDatasetConfig, NeuralVDBTrainerConfig
from medvox_nb.plenoxels import PlenoxelConfig

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data-dir', default=str(ROOT.parent/'shared'/'data'/'nerf_lego'))
    p.add_argument('--time-limit', type=float, default=600.)
    p.add_argument('--max-steps', type=int, default=1600)
    p.add_argument('--upsample-at', type=int, nargs='*', default=[400])
    p.add_argument('--resolution', type=int, default=64)
    p.add_argument('--sh-degree', type=int, default=2)
    p.add_argument('--batch-size', type=int, default=4096)
    p.add_argument('--carve', type=int, default=1)
    p.add_argument('--val-interval', type=int, default=200)
    p.add_argument('--out', default=str(ROOT/'runs'/'bench_plenoxels'))
    p.add_argument('--md', default=None)
    a = p.parse_args(argv)
    model = PlenoxelConfig(resolution=(a.resolution,)*3, sh_degree=a.sh_degree)
    train = NeuralVDBTrainerConfig(max_epochs=a.max_steps, batch_size=a.batch_size, carve_alpha=bool(a.carve), upsample_at=tuple(a.upsample_at),
                                   val_interval=a.val_interval, time_limit_s=a.time_limit, save_neuralvdb=False, tensorboard=False, output_dir=a.out, device='cpu')
    data = PlenoxelDatasetConfig(data_dir=a.data_dir, img_wh=(200, 200), train_split='train', val_split='train', val_views=(0, 15, 30, 45))
    load_before = os.getloadavg()[0]
    t0 = time.time()
    tr = NeuralVDBPlenoxelTrainer(model, train, data)
    setup = time.time() - t0
    res = tr.train()
    wall = time.time() - t0
    res.pop('images')
    res.update(setup_s=setup, wall_s=wall, load_before=load_before, load_after=os.getloadavg()[0], command=' '.join(['.venv/bin/python', 'benchmarks/bench_plenoxels.py', *(argv or sys.argv[1:])]))
    print(json.dumps({k: v for k, v in res.items() if k != 'run_info'}, indent=1))
    if a.md:
        rows = '\n'.join(f"| {v['step']} | {v['psnr']:.2f} |" for v in res['val_history'])
        Path(a.md).write_text(f"""# Plenoxels benchmark: held-out PSNR on lego at 200x200 (CPU)

Command: `{res['command']}` (wall {wall:.0f} s including data loading {setup:.0f} s and validations)

Machine: {res['run_info']['device']}, torch {res['run_info']['torch']}, load average {res.get('load_before', float('nan')):.1f} before the run, {res.get('load_after', float('nan')):.1f} after it.

Setup: 56 training views, views {res['val_views']} held out, 200x200, white background; grid
{a.resolution}^3 -> upsampled x2 at steps {a.upsample_at}, SH degree {a.sh_degree}, {a.batch_size} rays/step,
alpha carving {'on' if a.carve else 'off'}, sparse RMSprop.

| result | value |
|---|---|
| held-out PSNR (mean of 4 views) | **{res['psnr']:.2f} dB** |
| per view | {', '.join(f'{x:.2f}' for x in res['psnr_per_view'])} |
| training time (validation excluded) | {res['train_time_s']:.0f} s |
| steps / epochs | {res['step']} / {res['epoch']:.2f} |
| final grid | {res['resolution']}, {res['occupied_voxels']:,} occupied voxels |

PSNR curve (held-out views):

| step | PSNR dB |
|---|---|
{rows}
""")
    return res

if __name__ == '__main__':
    main()
