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
#
# Options (an existing environment, an offline node):
#   --into-current-env           no venv: install into the environment of --python (default
#                                $PYTHON, else python3) only what it lacks or has outside our
#                                ranges (requirements/base.txt); everything there stays at its
#                                version, its torch above all; prints what it installed and kept
#   --wheelhouse DIR             install from DIR alone, no network (pip --no-index): a folder
#                                tools/make_wheelhouse.sh wrote for this environment
#   --python PY                  the interpreter (--into-current-env), or the one that creates
#                                the venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

INTO=0 WHEELHOUSE="" PY=""
while (($#)); do
    case $1 in
        --into-current-env) INTO=1 ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a folder}; shift ;;
        --python) PY=${2:?--python needs an interpreter}; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$WHEELHOUSE" ]; then
    [ -d "$WHEELHOUSE" ] || { echo "[setup] --wheelhouse $WHEELHOUSE: no such folder (tools/make_wheelhouse.sh makes one)" >&2; exit 2; }
    WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
fi

TORCH_VERSION=${FPT_TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${FPT_TORCHVISION_VERSION:-0.29.1}
VENV=${FPT_VENV:-.venv}
say() { echo "[setup] $*"; }

if ((INTO)); then
    PY=${PY:-${PYTHON:-python3}}
    command -v "$PY" >/dev/null || { echo "[setup] --python $PY: no such interpreter" >&2; exit 2; }
    LOGS=.cache/setup
    say "into the current environment of $PY ($("$PY" -c 'import sys; print(sys.prefix)'))"
else
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV with ${PY:-${PYTHON:-python3}} ${FPT_VENV_ARGS:-}"
        "${PY:-${PYTHON:-python3}}" -m venv ${FPT_VENV_ARGS:-} "$VENV"
    fi
    PY=$VENV/bin/python
    LOGS=$VENV
fi
mkdir -p "$LOGS"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
OFFLINE=()
[ -n "$WHEELHOUSE" ] && OFFLINE=(--no-index --find-links "$WHEELHOUSE")

if ((INTO)) || [ -n "$WHEELHOUSE" ]; then
    # only what the environment lacks, everything there kept at its version (tools/wheelhouse.py)
    if ! ((INTO)) && ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
        say "torch ${TORCH_VERSION}, torchvision ${TORCHVISION_VERSION} from $WHEELHOUSE"
        "${PIP[@]}" "${OFFLINE[@]}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" || {
            say "no torch ${TORCH_VERSION} in $WHEELHOUSE: make it with tools/make_wheelhouse.sh --with-torch, or use --into-current-env where torch is installed"
            exit 1
        }
    fi
    "$PY" tools/wheelhouse.py install ${WHEELHOUSE:+--wheelhouse "$WHEELHOUSE"}
else
    "${PIP[@]}" --upgrade "pip>=23.1" "setuptools>=70" wheel
    if [ "${FPT_KEEP_TORCH:-0}" = 1 ] && "$PY" -c "import torch, torchvision" 2>/dev/null; then
        say "keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
    else
        say "torch ${TORCH_VERSION}, torchvision ${TORCHVISION_VERSION}"
        "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
            "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
    fi
    say "pinned dependencies (requirements/lock.txt), optional features' too (extras.txt)"
    "${PIP[@]}" -r requirements/base.txt -r requirements/extras.txt -c requirements/lock.txt
    "${PIP[@]}" --no-deps -r requirements/no-deps.txt -c requirements/lock.txt
fi

say "detectron2"
"$PY" tools/build_detectron2.py ${WHEELHOUSE:+--wheelhouse "$WHEELHOUSE"}

say "fpt (editable)"
"${PIP[@]}" "${OFFLINE[@]}" --no-deps --no-build-isolation -e . > "$LOGS/fpt-install.log" 2>&1 || { cat "$LOGS/fpt-install.log"; exit 1; }

SAMPLES=${DETECTRON2_DATASETS:-datasets}/.cache
if [ -n "$WHEELHOUSE" ] && ! { compgen -G "$SAMPLES/labelme-*.tar.gz" && compgen -G "$SAMPLES/deepforest-*.whl"; } >/dev/null; then
    # their files come from the package index (34 MB): not for an offline node
    say "sample data sets skipped: offline, and their registry files are not in $SAMPLES (run datasets/prepare_samples.py where the index is reachable)"
else
    say "sample data sets (datasets/prepare_samples.py)"
    "$PY" datasets/prepare_samples.py > "$LOGS/prepare-samples.log" 2>&1 || { cat "$LOGS/prepare-samples.log"; exit 1; }
fi

"$PY" -c "import fpt, detectron2; print('[setup] ready: fpt', fpt.__version__, '| detectron2', detectron2.__version__, '| torch', __import__('torch').__version__)"
