#!/usr/bin/env bash
# Creates (or completes) the project's virtual environment: torch, Detectron2 and this package.
# Idempotent: every step checks first and skips what is already there. An environment that
# already has Detectron2 keeps it, and keeps its numpy, Pillow, setuptools, torch and
# torchvision: Detectron2 0.6's version pins are installed only when this script installs 0.6.
#   usage: tools/install/install_env.sh [VENV_DIR]   (default: .venv at the repository root)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$root/.venv}
py=$venv/bin/python
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }
step() { printf '[setup] %s\n' "$*"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$py" ]; then
  step "creating virtual environment $venv"
  python3 -m venv "$venv"
fi

if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
  step "installing torch 2.14.1 + torchvision 0.29.1 (about 5.5 GB)"
  pip install "torch==2.14.1" "torchvision==0.29.1"
fi

if "$py" -c "import detectron2" 2>/dev/null; then
  step "detectron2 $("$py" -c 'import detectron2; print(detectron2.__version__)') already installed:" \
    "keeping it, and its numpy, Pillow and setuptools"
  # Detectron2 0.6's Python sources fail on newer numpy and Pillow; say so, change nothing.
  "$py" - <<'EOF' || true
import detectron2, numpy, PIL
old = lambda version: tuple(int(x) for x in version.split(".")[:2])
if detectron2.__version__ == "0.6" and (old(numpy.__version__) >= (1, 24)
                                        or old(PIL.__version__) >= (10, 0)):
    print(f"[setup] note: Detectron2 0.6's sources need numpy<1.24 and Pillow<10 (this "
          f"environment has numpy {numpy.__version__}, Pillow {PIL.__version__}); left as they "
          "are. Install 'numpy<1.24' 'Pillow<10' yourself, or build Detectron2 main from source.")
EOF
else
  # Detectron2 0.6's sources need numpy<1.24, which has no wheels for Python 3.12 and later.
  version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$(printf '%s\n3.12\n' "$version" | sort -V | head -n 1)" = "3.12" ]; then
    echo "[setup] $venv has Python $version and no Detectron2. This script would install" \
      "Detectron2 0.6, whose sources need numpy<1.24, which has no wheels for Python 3.12 or" \
      "later. Install Detectron2 from source into this environment first (README:" \
      "Install; it keeps it), or use Python 3.8-3.11 for $venv." >&2
    exit 1
  fi
  # Reinstalled when the pins change.
  pins=$root/tools/install/requirements-detectron2-0.6.txt
  stamp=$venv/.mkd-requirements.sha256
  if [ "$(sha256sum < "$pins")" != "$(cat "$stamp" 2>/dev/null)" ]; then
    step "installing Detectron2 0.6's dependencies with the pins its sources need (numpy<1.24," \
      "Pillow<10, setuptools<81, omegaconf 2.3, hydra-core 1.3.2, fvcore, pycocotools, ...)"
    pip install -r "$pins"
    sha256sum < "$pins" > "$stamp"
  fi
  step "installing Detectron2 0.6 (Python sources from PyPI's pb1-detectron2, no C++ extension)"
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

# What the project and its tests need besides: installed with the environment's numpy, Pillow,
# setuptools, torch and torchvision held at their versions (a pip constraints file).
if ! "$py" -c "import fvcore, pycocotools, tensorboard, matplotlib, scipy, sklearn, skimage, pytest" \
  2>/dev/null; then
  "$py" - > "$work/constraints.txt" <<'EOF'
from importlib import metadata
for name in ("numpy", "Pillow", "setuptools", "torch", "torchvision"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
EOF
  step "installing the project's and the tests' dependencies (tools/install/requirements.txt)," \
    "holding $(paste -sd ' ' "$work/constraints.txt")"
  pip install -c "$work/constraints.txt" -r "$root/tools/install/requirements.txt"
fi

# From outside the repository: in it, "import mkd" finds the folder, not an install, and the
# tools (run as scripts) would not find the packages.
if ! (cd / && "$py" -c "import mkd, mkd_bench") 2>/dev/null; then
  step "installing this project (pip install -e .)"
  pip install --no-deps --no-build-isolation -e "$root"
fi

versions=$("$py" -c 'import numpy, PIL, torch, detectron2, mkd
print(f"torch {torch.__version__}, detectron2 {detectron2.__version__}, numpy {numpy.__version__}, Pillow {PIL.__version__}")')
step "environment ready: $versions"
