#!/usr/bin/env bash
# Creates (or completes) a second environment with Detectron2's main branch built from source,
# C++ ops included, as Detectron2 documents for GPU users: the project is tested on it too.
# Idempotent: every step checks first; Detectron2 is rebuilt only when the archive changes.
#   usage: tools/install/install_d2main.sh [VENV_DIR] [ARCHIVE]
#   (defaults: .venv-d2main at the repository root, ../shared/detectron2-main.tar.gz beside it)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$(realpath -m "${1:-$root/.venv-d2main}")  # absolute: the build runs in another folder
archive=$(realpath -m "${2:-$root/../shared/detectron2-main.tar.gz}")
py=$venv/bin/python
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }
step() { printf '[setup-d2main] %s\n' "$*"; }

if [ ! -f "$archive" ]; then
  echo "[setup-d2main] no Detectron2 source archive at $archive:" \
    "pass its path as the second argument (make test-d2main D2MAIN_ARCHIVE=...)" >&2
  exit 1
fi

if [ ! -x "$py" ]; then
  step "creating virtual environment $venv"
  python3 -m venv "$venv"
fi

if ! "$py" -c "import torch, torchvision, setuptools, wheel, ninja" 2>/dev/null; then
  step "installing torch 2.14.1 + torchvision 0.29.1 and the build tools (setuptools<81, ninja)"
  pip install "torch==2.14.1" "torchvision==0.29.1" "setuptools<81" wheel ninja
fi

# The stamp holds the archive's sha256: a build from another archive is replaced.
stamp=$venv/.mkd-detectron2-main.sha256
sum=$(sha256sum < "$archive")
if [ "$sum" = "$(cat "$stamp" 2>/dev/null)" ] \
  && (cd / && "$py" -c "import detectron2._C") 2>/dev/null; then
  step "Detectron2 main from $(basename "$archive") already built: keeping it"
else
  step "building Detectron2 main from $(basename "$archive") with its CPU ops (~6 min on 2 cores)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tar xzf "$archive" -C "$work"
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  # Built in a temporary folder and imported from elsewhere: inside the source tree, its
  # detectron2/ folder would shadow the installed package.
  (cd "$src" && MAX_JOBS=${MAX_JOBS:-2} FORCE_CUDA=0 "$py" -m pip --disable-pip-version-check -q \
    install --no-build-isolation .)
  (cd / && "$py" -c "import detectron2._C") \
    || { echo "[setup-d2main] Detectron2 built but its C++ ops do not import" >&2; exit 1; }
  echo "$sum" > "$stamp"
fi

# What the test suite needs beyond Detectron2's own dependencies (current numpy and Pillow come
# with it); timm is the ViT backbone of the ViTDet configs.
if ! (cd / && "$py" -c "import pytest, sklearn, skimage, scipy, matplotlib, timm") 2>/dev/null
then
  step "installing the test dependencies (pytest, scikit-learn, scikit-image, scipy, matplotlib," \
    "timm)"
  pip install pytest scikit-learn scikit-image scipy matplotlib timm
fi

if ! (cd / && "$py" -c "import mkd") 2>/dev/null; then
  step "installing this project (pip install -e .)"
  pip install --no-build-isolation -e "$root"
fi

versions=$(cd / && "$py" -c 'import numpy, PIL, torch, detectron2, mkd
print(f"torch {torch.__version__}, numpy {numpy.__version__}, Pillow {PIL.__version__}")')
step "environment ready: Detectron2 main (from $(basename "$archive")), $versions"
