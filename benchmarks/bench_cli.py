#!/usr/bin/env python
"""Start-up time of `medvox --help` and `medvox <command> --help` (median of repeated runs, wall clock).

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7]

The bar is 0.5 s. `python -c "import torch"` is timed beside them as the reference a command that
imported its stage eagerly would pay.
"""
from __future__ import annotations
import argparse, statistics, subprocess, sys, time
from pathlib import Path
from medvox_nb.core import STAGES

MEDVOX = str(Path(sys.executable).parent/'medvox')

def timed(cmd, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); r = subprocess.run(cmd, capture_output=True); ts.append(time.perf_counter() - t0)
    return statistics.median(ts), r.returncode

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--repeats', type=int, default=7); a = ap.parse_args()
    print('| command | median wall time (s) | exit |\n|---|---|---|')
    for cmd in [[MEDVOX, '--help']] + [[MEDVOX, c, '--help'] for c in STAGES] + [[sys.executable, '-c', 'import torch']]:
        t, rc = timed(cmd, a.repeats)
        print(f'| `{" ".join(["medvox"] + cmd[1:]) if cmd[0] == MEDVOX else "python -c \"import torch\""}` | {t:.3f} | {rc} |')
