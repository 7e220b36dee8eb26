#!/usr/bin/env bash
# The main job on the embedded samples (the README's `make demo`): SMLM point clouds -> voxels ->
# prerendered HDF5 store (experiment notebook run by papermill, with figures) -> verified store ->
# NIfTI volumes for MONAI. Everything is written under one folder (default outputs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/demo}
BIN=$PWD/.venv/bin
export MEDVOX_STATIC=1 MPLBACKEND=Agg
mkdir -p "$OUT"
echo "== prerender experiment (papermill) -> $OUT/prerender_smlm.ipynb"
$BIN/papermill nbs/prerender_smlm.ipynb "$OUT/prerender_smlm.ipynb" -k python3 --cwd nbs \
  -p output_dir "$PWD/$OUT/prerendered_64" -p voxel_size 64 -p batch_size 4 --log-level WARNING
echo "== verify the store"
$BIN/medvox prerender --verify "$OUT/prerendered_64"
echo "== NIfTI volumes for MONAI"
$BIN/medvox to-nifti --prerendered-dir "$OUT/prerendered_64" -o "$OUT/nifti" --val-fraction 0.2 --overwrite
if [ -f nbs/train_plenoxels.ipynb ] && $BIN/python -c "import medvox_nb._openvdb" 2>/dev/null; then
  echo "== Plenoxels on the embedded lego views (papermill) -> $OUT/train_plenoxels.ipynb"
  $BIN/papermill nbs/train_plenoxels.ipynb "$OUT/train_plenoxels.ipynb" -k python3 --cwd nbs \
    -p output_dir "$PWD/$OUT/plenoxels" --log-level WARNING
fi
echo "== figures"
ls "$OUT"/*/*.png 2>/dev/null || true
echo "demo outputs in $OUT"
