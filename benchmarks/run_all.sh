#!/usr/bin/env bash
# Every benchmark behind BENCHMARKS.md, with the commands recorded there (about 90 minutes on 2 cores;
# the Plenoxels run alone takes 10). Run on an otherwise idle machine: ratios hold, absolute times drift.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== voxelize";  $PY benchmarks/bench_voxelize.py --repeats 5
echo "== prerender"; OMP_WAIT_POLICY=PASSIVE $PY benchmarks/bench_prerender.py --sizes 64 128 --repeats 5 --batch 8
echo "== vdb";       $PY benchmarks/bench_vdb.py --size 128 --repeats 3
echo "== plenoxels"; $PY benchmarks/bench_plenoxels.py --time-limit 600 --max-steps 2500 --upsample-at 250 --val-interval 250 --md benchmarks/plenoxels.md
echo "== ct";        $PY benchmarks/bench_ct.py --repeats 3
echo "== cli";       $PY benchmarks/bench_cli.py --repeats 5
echo "== train";     OMP_NUM_THREADS=1 $PY benchmarks/bench_train.py --steps 100 --repeats 7 --batch 8 --threads 1 --models mlp conv3d_16
echo "== sdf";       OMP_NUM_THREADS=2 $PY benchmarks/bench_sdf.py
echo "== ldm";       $PY benchmarks/bench_ldm.py all --budget-s 1200
echo "== vqvae";     $PY benchmarks/bench_vqvae.py prepare --out outputs/vqvae_bench/data && \
                     $PY benchmarks/bench_vqvae.py quality --config configs/vae/sparse_sdf_vqvae_64_1k.json --data outputs/vqvae_bench/data --out outputs/vqvae_bench_1k --budget 870 --parallel --threads 1 && \
                     $PY benchmarks/bench_vqvae.py speed --out outputs/vqvae_bench/speed64.json --resolutions 64 --backends torch spconv --steps 2
