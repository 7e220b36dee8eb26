#!/usr/bin/env python
"""Start-up time of `medvox --help` and `medvox <command> --help` (median of repeated runs, wall clock).

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7]

The bar is 0.5 s. On a shared, loaded machine the wall time stretches with the load; the CPU time
(user + system of the command) is what the command costs on an idle core. `python -c "import torch"` is timed beside them as the reference a command that
imported its stage eagerly would pay.
"""
from __future__ import annotations
import argparse, os, statistics, subprocess, sys, time
from pathlib import Path
from medvox_nb.core import STAGES

MEDVOX = str(Path(sys.executable).parent/'medvox')

def timed(cmd, repeats):
    "Median wall time and median CPU time (user + sys of the child: what it costs on an idle core) of `cmd`."
    import resource
    ts, cs = [], []
    for _ in range(repeats):
        u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter(); r = subprocess.run(cmd, capture_output=True); ts.append(time.perf_counter() - t0)
        u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cs.append(u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime)
    return statistics.median(ts), statistics.median(cs), r.returncode

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--repeats', type=int, default=7); a = ap.parse_args()
    print(f'load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
    print('| command | median wall time (s) | median CPU time (s) | exit |\n|---|---|---|---|')
    for cmd in [[MEDVOX, '--help']] + [[MEDVOX, c, '--help'] for c in STAGES] + [[sys.executable, '-c', 'import torch']]:
        t, c, rc = timed(cmd, a.repeats)
        label = ' '.join(['medvox'] + cmd[1:]) if cmd[0] == MEDVOX else 'python -c "import torch"'
        print(f'| `{label}` | {t:.3f} | {c:.3f} | {rc} |')
