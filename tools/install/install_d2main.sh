#!/usr/bin/env bash
# Creates (or completes) a second environment with Detectron2's main branch built from source,
# C++ ops included, as Detectron2 documents for GPU users: the project is tested on it too.
# The source is Detectron2's git repository at the pinned commit below, or a source archive of
# it when one is given. CUDA ops are built when a CUDA toolkit (nvcc) and a CUDA build of torch
# are present, or when FORCE_CUDA=1; otherwise the CPU ops only.
# Idempotent: every step checks first; Detectron2 is rebuilt only when its source changes.
#   usage: tools/install/install_d2main.sh [VENV_DIR] [ARCHIVE]
#   (defaults: .venv-d2main at the repository root; no archive: git, at D2MAIN_COMMIT)
set -euo pipefail

# The commit the project is tested on (2026-06-06), and where it comes from.
D2MAIN_REPO=${D2MAIN_REPO:-https://github.com/facebookresearch/detectron2.git}
D2MAIN_COMMIT=${D2MAIN_COMMIT:-02b5c4e295e990042a714712c21dc79b731e8833}

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=$(realpath -m "${1:-$root/.venv-d2main}")  # absolute: the build runs in another folder
archive=${2:-}
py=$venv/bin/python
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }
step() { printf '[setup-d2main] %s\n' "$*"; }

if [ -n "$archive" ]; then
  archive=$(realpath -m "$archive")
  if [ ! -f "$archive" ]; then
    echo "[setup-d2main] no Detectron2 source archive at $archive: pass an existing archive" \
      "(make test-d2main D2MAIN_ARCHIVE=...), or none to build from git ($D2MAIN_REPO at" \
      "$D2MAIN_COMMIT)" >&2
    exit 1
  fi
  source_name=$(basename "$archive")
  source_id=$(sha256sum < "$archive")
else
  command -v git >/dev/null \
    || { echo "[setup-d2main] building from git needs git: install it, or pass a source" \
           "archive (make test-d2main D2MAIN_ARCHIVE=...)" >&2; exit 1; }
  source_name="$D2MAIN_REPO at ${D2MAIN_COMMIT:0:7}"
  source_id="git $D2MAIN_REPO $D2MAIN_COMMIT"
fi

if [ ! -x "$py" ]; then
  step "creating virtual environment $venv"
  python3 -m venv "$venv"
fi

if ! "$py" -c "import torch, torchvision, setuptools, wheel, ninja" 2>/dev/null; then
  step "installing torch 2.14.1 + torchvision 0.29.1 and the build tools (setuptools<81, ninja)"
  pip install "torch==2.14.1" "torchvision==0.29.1" "setuptools<81" wheel ninja
fi

# CUDA ops: Detectron2's setup.py builds them when torch sees a GPU, or when FORCE_CUDA=1. With
# no visible GPU (a container or login node) torch needs TORCH_CUDA_ARCH_LIST to know what to
# compile for, so the toolkit alone builds CPU ops. A FORCE_CUDA the caller set is kept.
if [ -z "${FORCE_CUDA:-}" ]; then
  nvcc=$(command -v nvcc || true)
  if [ -z "$nvcc" ] && [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
    nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
  fi
  read -r torch_cuda gpus < <(cd / && "$py" -c \
    'import torch; c = torch.version.cuda; print(c or "-", torch.cuda.device_count() if c else 0)')
  if [ -n "$nvcc" ] && [ "$torch_cuda" != "-" ] \
    && { [ "$gpus" -gt 0 ] || [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; }; then
    export FORCE_CUDA=1
    export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$nvcc")")}
    ops="CPU and CUDA ops (nvcc at $nvcc, torch built for CUDA $torch_cuda)"
  elif [ -n "$nvcc" ] && [ "$torch_cuda" != "-" ]; then
    export FORCE_CUDA=0
    ops="CPU ops (a CUDA toolkit but no visible GPU: set TORCH_CUDA_ARCH_LIST, e.g. \"8.0;9.0\", to compile the GPU kernels too)"
  else
    export FORCE_CUDA=0
    ops="CPU ops (no CUDA toolkit, or a CPU build of torch)"
  fi
else
  ops="ops with FORCE_CUDA=$FORCE_CUDA as set"
fi

# The stamp names the source (the archive's sha256, or the commit): another source is rebuilt.
stamp=$venv/.mkd-detectron2-main.sha256
if [ "$source_id" = "$(cat "$stamp" 2>/dev/null)" ] \
  && (cd / && "$py" -c "import detectron2._C") 2>/dev/null; then
  step "Detectron2 main from $source_name already built: keeping it"
else
  step "building Detectron2 main from $source_name with its $ops (several minutes on a few" \
    "CPU cores; MAX_JOBS sets the parallel compiles)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if [ -n "$archive" ]; then
    tar xzf "$archive" -C "$work"
    src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  else
    # One commit, no history: GitHub serves a commit by its full hash.
    src=$work/detectron2
    git init -q "$src"
    git -C "$src" fetch -q --depth 1 "$D2MAIN_REPO" "$D2MAIN_COMMIT" \
      || { echo "[setup-d2main] could not fetch $D2MAIN_COMMIT from $D2MAIN_REPO (network?):" \
             "pass a source archive instead (make test-d2main D2MAIN_ARCHIVE=...)" >&2; exit 1; }
    git -C "$src" checkout -q FETCH_HEAD
  fi
  # Built in a temporary folder and imported from elsewhere: inside the source tree, its
  # detectron2/ folder would shadow the installed package.
  (cd "$src" && MAX_JOBS=${MAX_JOBS:-2} "$py" -m pip --disable-pip-version-check -q \
    install --no-build-isolation .)
  (cd / && "$py" -c "import detectron2._C") \
    || { echo "[setup-d2main] Detectron2 built but its C++ ops do not import" >&2; exit 1; }
  echo "$source_id" > "$stamp"
fi

# What the test suite needs beyond Detectron2's own dependencies (current numpy and Pillow come
# with it); timm is the ViT backbone of the ViTDet configs.
if ! (cd / && "$py" -c "import pytest, sklearn, skimage, scipy, matplotlib, timm") 2>/dev/null
then
  step "installing the test dependencies (pytest, scikit-learn, scikit-image, scipy, matplotlib," \
    "timm)"
  pip install pytest scikit-learn scikit-image scipy matplotlib timm
fi

if ! (cd / && "$py" -c "import mkd, mkd_bench") 2>/dev/null; then
  step "installing this project (pip install -e .)"
  pip install --no-deps --no-build-isolation -e "$root"
fi

versions=$(cd / && "$py" -c 'import numpy, PIL, torch, detectron2, mkd
print(f"torch {torch.__version__}, numpy {numpy.__version__}, Pillow {PIL.__version__}")')
step "environment ready: Detectron2 main (from $source_name), $versions"
