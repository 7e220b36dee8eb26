#!/usr/bin/env bash
# The whole test suite (the README's `make test`): package == notebooks; every notebook executed, every
# cell (the inline tests nbdev_test runs, and the cells it skips), once, by the documentation site
# build, which fails naming the notebook and the cell; then pytest (CLI, integration, reliability,
# docs in Chromium). One notebook alone: `.venv/bin/nbdev_test --path nbs/XX.ipynb`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export MEDVOX_PROGRESS=0 MEDVOX_STATIC=1 MPLBACKEND=Agg PYTHONHASHSEED=0 PYTHONWARNINGS=ignore::DeprecationWarning
t0=$SECONDS
step() { echo; echo "== $* ($((SECONDS - t0)) s)"; }

step "nbdev_export: medvox_nb/ must be what the notebooks say"
$BIN/nbdev_export
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git status --porcelain -- medvox_nb)" ]; then
  git status --porcelain -- medvox_nb
  echo "medvox_nb/ differs from nbs/: edit the notebook, run nbdev_export and commit both"; exit 1
fi

step "docs site: every notebook executed (its inline tests included), then Sphinx + myst-nb"
$BIN/python scripts/build_docs.py --out docs/_build/html
export MEDVOX_DOCS_DIR=$PWD/docs/_build/html

step "pytest"
# two workers, one test file each at a time (module fixtures are built once); one torch/OpenMP thread
# per worker so the two do not fight over the 2 cores (tests that need more threads set them)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $BIN/python -m pytest tests -q -ra -p no:cacheprovider --durations=15 \
  -n "${MEDVOX_TEST_WORKERS:-2}" --dist loadfile
echo "all tests done in $((SECONDS - t0)) s"
