#!/usr/bin/env bash
# Creates (or completes) the project's virtual environment: torch, Detectron2 and this package.
# Idempotent: every step checks first and skips what is already there.
#   usage: tools/install/install_env.sh [VENV_DIR]   (default: .venv at the repository root)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$root/.venv}
py=$venv/bin/python
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }
step() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$py" ]; then
  step "creating virtual environment $venv"
  python3 -m venv "$venv"
fi

if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
  step "installing torch 2.14.1 + torchvision 0.29.1 (~1 min from the local wheel store, ~5.5 GB)"
  pip install "torch==2.14.1" "torchvision==0.29.1"
fi

# Versions Detectron2 0.6's Python sources need (see README, 'Installation'); reinstalled when
# requirements.txt changes.
req=$root/tools/install/requirements.txt
stamp=$venv/.mkd-requirements.sha256
if [ "$(sha256sum < "$req")" != "$(cat "$stamp" 2>/dev/null)" ]; then
  step "installing Detectron2's dependencies (numpy<1.24, Pillow<10, omegaconf 2.3, hydra-core 1.3.2, fvcore, pycocotools, ...)"
  pip install -r "$req"
  sha256sum < "$req" > "$stamp"
fi

if "$py" -c "import detectron2" 2>/dev/null; then
  step "detectron2 $("$py" -c 'import detectron2; print(detectron2.__version__)') already installed: keeping it"
else
  step "installing Detectron2 0.6 (Python sources from PyPI's pb1-detectron2, no C++ extension)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  pip download --no-deps --no-build-isolation --no-binary :all: "pb1-detectron2==0.6" -d "$work"
  tar xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
  src=$work/pb1-detectron2-0.6
  # The sdist ships no C++ sources: build no extension, and install a stand-in _C instead.
  # Its model-zoo configs already sit inside the package, where setup.py's glob misses them.
  sed -i -e 's/ext_modules=get_extensions(),/ext_modules=[],/' \
    -e 's|package_data={"detectron2.model_zoo": get_model_zoo_configs()}|package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}|' \
    "$src/setup.py"
  grep -q 'ext_modules=\[\]' "$src/setup.py" && grep -q '"configs/\*\*/\*.py"' "$src/setup.py" \
    || { echo "[setup] could not patch pb1-detectron2's setup.py" >&2; exit 1; }
  cp "$root/tools/install/detectron2_C_standin.py" "$src/detectron2/_C.py"
  pip install --no-deps --no-build-isolation "$src"
fi

if ! "$py" -c "import mkd" 2>/dev/null; then
  step "installing this project (pip install -e .)"
  pip install --no-deps --no-build-isolation -e "$root"
fi

versions=$("$py" -c 'import torch, detectron2, mkd; print(f"torch {torch.__version__}, detectron2 {detectron2.__version__}")')
step "environment ready: $versions"
