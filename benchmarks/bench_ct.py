#!/usr/bin/env python
"""CT preprocessing of example_ct.nii.gz end to end (4 windows, 512³, normalised CT, metadata): medvox against
the seeds' method, on CPU.

    .venv/bin/python benchmarks/bench_ct.py [--ct ../shared/data/ct/example_ct.nii.gz] [--repeats 3]

Each repeat runs three commands back to back on the same scan, each as its own process (so each pays its own
Python start-up and imports; times are wall clock from launch to exit):

* **seed**: the seeds' `process_medical_ct.py` pipeline written out (`seed_pipeline` below): nibabel load (C order,
  as MONAI's `LoadImaged` gives it; the seeds' MONAI transforms themselves are not run), pad at the
  end of each axis to 512³ with -1000 (`np.pad`), `apply_window_binarization` of the padded volume for the four
  windows and `np.save` of each (uint8), the foreground normalisation (`normalize_ct`) of the scan padded with the
  normalised air and `np.save` (float32), `info.json` and `metadata.csv`. Its files are the same bytes as medvox's
  `--window_format npy` output (checked once per run). Like the seeds it does not fsync.
* **medvox npy**: `medvox ct preprocess <raw> <out> --window_format npy` (the seeds' dense files, each case
  written in a temporary folder, fsynced, renamed).
* **medvox packed**: `medvox ct preprocess <raw> <out>` (the default compact `.vol.npz` volumes).

The table reports medians (and min..max) over the repeats, the bytes written per case and the in-process time
medvox records in info.json (`processing_time_sec`: reading to the last volume, without start-up, imports and the
final fsync). benchmarks/ct.md holds a run with its machine.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDVOX = Path(sys.executable).parent/'medvox'
WINDOWS = {'lung': (1500, -600), 'bone': (1500, 300), 'soft_tissue': (400, 50), 'brain': (80, 35)}


def seed_pipeline(ct_path: str, out: str, res: int = 512, air: int = -1000):
    "The seeds' steps for one case (see the module docstring)."
    import nibabel as nib
    t0 = time.time()
    hu = np.ascontiguousarray(np.asarray(nib.load(ct_path).dataobj))   # C order, as MONAI's NibabelReader loads it
    case = Path(out)/'processed'/Path(ct_path).name.replace('.nii.gz', '')
    (case/'windows').mkdir(parents=True)
    padded = np.pad(hu, [(0, res - s) for s in hu.shape], mode='constant', constant_values=air)
    for name, (w, l) in WINDOWS.items():
        binary = ((padded >= l - w / 2.0) & (padded <= l + w / 2.0)).astype(np.uint8)
        np.save(case/'windows'/f'{name}_w{w}_l{l}.npy', binary)
    flat = hu.flatten()
    fg = flat[flat > np.mean(flat)]
    lo, hi, mu, sd = np.percentile(fg, 0.05), np.percentile(fg, 99.95), np.mean(fg), max(np.std(fg), 1e-8)
    norm = np.pad(((np.clip(hu, lo, hi) - mu) / sd).astype(np.float32), [(0, res - s) for s in hu.shape],
                  constant_values=np.float32((np.clip(air, lo, hi) - mu) / sd))
    np.save(case/f'ct_normalized_{res}.npy', norm)
    info = dict(case_id=case.name, original_shape=list(hu.shape), adapted_shape=[res] * 3, resolution=res,
                windows_processed=list(WINDOWS), processing_time_sec=round(time.time() - t0, 2))
    (case/'info.json').write_text(json.dumps(info, indent=2))
    with open(Path(out)/'metadata.csv', 'w') as f:
        f.write(','.join(info) + '\n' + ','.join(json.dumps(v) if isinstance(v, list) else str(v) for v in info.values()) + '\n')


def run(cmd, env=None) -> float:
    t = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=dict(os.environ, MEDVOX_PROGRESS='0', **(env or {})))
    dt = time.perf_counter() - t
    if p.returncode != 0: raise SystemExit(f'{cmd} failed ({p.returncode}):\n{p.stderr[-2000:]}')
    return dt


def tree_bytes(d: Path) -> int: return sum(f.stat().st_size for f in d.rglob('*') if f.is_file())


def same_files(seed_case: Path, npy_case: Path) -> bool:
    files = sorted(p.relative_to(seed_case) for p in seed_case.rglob('*.npy'))
    return bool(files) and all((seed_case/f).read_bytes() == (npy_case/f).read_bytes() for f in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ct', default=str(ROOT.parent/'shared'/'data'/'ct'/'example_ct.nii.gz'))
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--seed-run', nargs=2, metavar=('CT', 'OUT'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.seed_run: seed_pipeline(*a.seed_run); return
    ct = Path(a.ct).resolve()
    if not ct.is_file(): raise SystemExit(f'{ct}: not found (give --ct)')
    work = Path(tempfile.mkdtemp(prefix='bench_ct_', dir=os.environ.get('MEDVOX_BENCH_TMP')))
    raw = work/'raw'; raw.mkdir()
    (raw/ct.name).symlink_to(ct)
    case = ct.name.replace('.nii.gz', '')
    load0 = os.getloadavg()
    times = {k: [] for k in ('seed', 'npy', 'packed')}
    inproc = {k: [] for k in ('npy', 'packed')}
    sizes, identical = {}, []
    try:
        for r in range(a.repeats):
            for k in ('seed', 'npy', 'packed'):
                out = work/f'{k}_{r}'
                if k == 'seed': times[k].append(run([sys.executable, __file__, '--seed-run', raw/ct.name, out]))
                else:
                    times[k].append(run([MEDVOX, 'ct', 'preprocess', raw, out] + (['--window_format', 'npy'] if k == 'npy' else [])))
                    info = json.loads((out/'raw'/'processed'/case/'info.json').read_text())
                    inproc[k].append(info['processing_time_sec'])
                case_dir = out/'processed'/case if k == 'seed' else out/'raw'/'processed'/case
                sizes[k] = tree_bytes(case_dir)
            identical.append(same_files(work/f'seed_{r}'/'processed'/case, work/f'npy_{r}'/'raw'/'processed'/case))
            for k in ('seed', 'npy', 'packed'): shutil.rmtree(work/f'{k}_{r}')
    finally: shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'# {ct.name}: 4 windows + normalised CT at 512^3, {a.repeats} repeats; {platform.node()}, {os.cpu_count()} CPUs, '
          f'numpy {np.__version__}; load average {load0[0]:.2f} before, {load1[0]:.2f} after')
    print('| command | wall clock, median (min..max) | in-process (info.json) | bytes per case | vs seed |')
    print('|---|---|---|---|---|')
    names = {'seed': "seeds' method (np.pad, np.save, no fsync)", 'npy': 'medvox ct preprocess --window_format npy',
             'packed': 'medvox ct preprocess (packed, default)'}
    for k in ('seed', 'npy', 'packed'):
        ip = f'{statistics.median(inproc[k]):.2f} s' if k in inproc else ''
        print(f'| {names[k]} | {med[k]:.2f} s ({min(times[k]):.2f}..{max(times[k]):.2f}) | {ip} | {sizes[k] / 2**20:,.1f} MiB | {med["seed"] / med[k]:.2f}x |')
    print(f'\nnpy files of medvox and of the seed pipeline byte-identical in every repeat: {all(identical)}')


if __name__ == '__main__':
    main()
