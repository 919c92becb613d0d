#!/usr/bin/env bash
# One-command set-up of fpt: creates .venv/ in the repository root and installs everything
# (torch + torchvision, pinned dependencies, detectron2, fpt itself). Quick and idempotent:
# re-running it only installs what is missing.
#
# Environment knobs:
#   PYTHON=python3.11            interpreter used to create .venv (default: python3)
#   FPT_VENV=DIR                 the virtual environment to create or complete (default: .venv)
#   FPT_VENV_ARGS=--system-site-packages
#                                let .venv see a detectron2/torch you built yourself (e.g. with
#                                CUDA ops on a cluster); an importable detectron2 is used as is
#   TORCH_INDEX_URL=URL          install torch/torchvision from PyTorch's wheel index for your
#                                CUDA version instead of PyPI's default build
#   FPT_TORCH_VERSION=2.11.0 FPT_TORCHVISION_VERSION=0.26.0
#                                another torch/torchvision pair (default 2.14.1 / 0.29.1; the
#                                oldest we support is 2.11.0 / 0.26.0)
#   FPT_KEEP_TORCH=1             keep the torch/torchvision already importable in the venv
#   FPT_DETECTRON2=SOURCE        build detectron2 from a source tree, a source archive or a pip
#                                requirement (git+https://github.com/facebookresearch/detectron2.git@COMMIT)
#                                with its compiled ops, instead of our Python-only v0.6 wheel
#   FPT_DETECTRON2_PYONLY=1      ... Python-only (no compiled ops)
#   FPT_DETECTRON2_CUDA=0        ... C++ ops only, even where torch has CUDA and nvcc is found
#                                (FORCE_CUDA=1: CUDA ops even where they would not be built)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=${FPT_TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${FPT_TORCHVISION_VERSION:-0.29.1}
VENV=${FPT_VENV:-.venv}
say() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with ${PYTHON:-python3} ${FPT_VENV_ARGS:-}"
    "${PYTHON:-python3}" -m venv ${FPT_VENV_ARGS:-} "$VENV"
fi
PY=$VENV/bin/python
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

"${PIP[@]}" --upgrade "pip>=23.1" "setuptools>=70" wheel

if [ "${FPT_KEEP_TORCH:-0}" = 1 ] && "$PY" -c "import torch, torchvision" 2>/dev/null; then
    say "keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    say "torch ${TORCH_VERSION}, torchvision ${TORCHVISION_VERSION}"
    "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
fi

say "pinned dependencies (requirements/lock.txt)"
"${PIP[@]}" -r requirements/base.txt -c requirements/lock.txt

say "detectron2"
"$PY" tools/build_detectron2.py

say "fpt (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e . > "$VENV/fpt-install.log" 2>&1 || { cat "$VENV/fpt-install.log"; exit 1; }

say "sample data sets (datasets/prepare_samples.py)"
"$PY" datasets/prepare_samples.py > "$VENV/prepare-samples.log" 2>&1 || { cat "$VENV/prepare-samples.log"; exit 1; }

"$PY" -c "import fpt, detectron2; print('[setup] ready: fpt', fpt.__version__, '| detectron2', detectron2.__version__, '| torch', __import__('torch').__version__)"
