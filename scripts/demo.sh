#!/usr/bin/env bash
# The main job on the embedded samples (the README's `make demo`): SMLM point clouds -> voxels ->
# prerendered HDF5 store (experiment notebook run by papermill, with figures) -> verified store ->
# NIfTI volumes for MONAI; Plenoxels on lego views; the latent diffusion chain at 32³ (fast_dev_run:
# simulated acquisitions -> autoencoder -> latent DDPM -> NIfTI volumes and point clouds).
# Everything is written under one folder (default outputs/demo).
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
echo "== latent diffusion, fast_dev_run at 32³ -> $OUT/ldm"
L="$PWD/$OUT/ldm"; mkdir -p "$L"
cat > "$L/paths.yaml" <<YAML
data: {train_data_dir: "$L/data/train", val_data_dir: "$L/data/val"}
autoencoder: {checkpoints: {output_dir: "$L/autoencoder"}, logging: {log_dir: "$L/logs/autoencoder"}}
diffusion: {checkpoints: {autoencoder_path: "$L/autoencoder/best_model.pt", output_dir: "$L/diffusion"}, logging: {log_dir: "$L/logs/diffusion"}}
sampling: {output_dir: "$L/samples"}
YAML
CFG=(--config configs/ldm/ldm_tiny.yaml --config "$L/paths.yaml")
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $BIN/medvox ldm make-data --output_dir "$L/data" --n-train 2 --n-val 1 --regions-per-field 4 --overwrite
for step in train-autoencoder train-diffusion generate; do OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $BIN/medvox ldm $step "${CFG[@]}"; done
ls "$L/samples/nifti" "$L/samples/pointcloud"
echo "== figures"
ls "$OUT"/*/*.png 2>/dev/null || true
echo "demo outputs in $OUT"
