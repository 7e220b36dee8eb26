#!/usr/bin/env bash
# Idempotent set-up for medvox_nb: system packages, .venv, CPU torch, the package (editable, dev
# extras, native modules) and a Jupyter kernel named medvox_nb. A second run on a set-up machine
# only compares a stamp and returns in seconds.
#   MEDVOX_PYTHON   interpreter to build the venv from (default: python3)
#   MEDVOX_TORCH    torch requirement installed first (default: torch==2.13.0, the CPU build;
#                   on a GPU machine e.g. MEDVOX_TORCH="torch==2.13.0" with pip's CUDA index)
#   MEDVOX_NO_APT=1 never call apt-get (print what is missing instead)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${MEDVOX_PYTHON:-python3}
TORCH=${MEDVOX_TORCH:-torch==2.13.0}
VENV=.venv
APT_PKGS="libopenvdb-dev libopenvdb-tools libboost-dev libtbb-dev chromium"

stamp_now() { { cat settings.ini setup.py scripts/setup.sh; cat csrc/*.cpp csrc/*.h 2>/dev/null || true; echo "$TORCH"; } | sha256sum | cut -c1-16; }

# 1. system packages (OpenVDB headers + vdb_print for the native module, chromium for the docs test)
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ -z "${MEDVOX_NO_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: system packages missing:$missing"
    echo "setup: install them (Debian/Ubuntu: apt-get install$missing; conda: openvdb boost tbb) or"
    echo "setup: continue without the OpenVDB module and the docs browser test."
  fi
fi

# 2. virtual environment
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip -q --disable-pip-version-check"

kernel_ok() { grep -qs "$PWD/$VENV/bin/python" "$HOME/.local/share/jupyter/kernels/medvox_nb/kernel.json"; }
# the native modules the last build made (.setup-native) must still be there (e.g. after `git clean -fdx`)
NATIVE_CHECK='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in open(".setup-native").read().split()))'
native_ok() { [ -f .setup-native ] && "$VENV/bin/python" -c "$NATIVE_CHECK" 2>/dev/null; }
if [ -f .setup-stamp ] && [ "$(cat .setup-stamp)" = "$(stamp_now)" ] && native_ok && "$VENV/bin/python" -c "import medvox_nb, torch" 2>/dev/null; then
  kernel_ok || "$VENV/bin/python" -m ipykernel install --user --name medvox_nb --display-name "Python (medvox_nb)" >/dev/null
  echo "setup: up to date ($VENV)"; exit 0
fi

# 3. torch first, pinned, so no dependency pulls a multi-GB CUDA build on CPU machines
"$VENV/bin/python" -c "import torch" 2>/dev/null || $PIP install "$TORCH"
# 4. build tools, then the package (editable, dev extras, native modules from csrc/)
$PIP install "setuptools>=68" wheel "pybind11>=2.10"
$PIP install --no-build-isolation -e ".[dev,sparse]"
# nbdev 2.4.14 breaks with fastcore 2.x; fastcore 1.12.3 is the lowest its metadata accepts and works
$PIP uninstall -y fastspec fasttransport >/dev/null 2>&1 || true
# 5. Jupyter kernel
"$VENV/bin/python" -m ipykernel install --user --name medvox_nb --display-name "Python (medvox_nb)" >/dev/null
stamp_now > .setup-stamp
"$VENV/bin/python" -c 'import importlib.util as u; print(*[m for m in ("medvox_nb._openvdb", "medvox_nb._sdf") if u.find_spec(m)])' > .setup-native
"$VENV/bin/medvox" doctor || true
echo "setup: done"
