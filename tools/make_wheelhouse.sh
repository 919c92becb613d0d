#!/usr/bin/env bash
# A wheelhouse for an offline node: what its environment lacks of fpt's requirements, as wheels
# for its Python and platform, with our detectron2 wheel; installed there with
# `tools/setup.sh --wheelhouse DIR --into-current-env` (no network: pip --no-index).
#
#   tools/make_wheelhouse.sh OUT [--python 3.12] [--platform TAG ...] [--have FREEZE.txt] [--with-torch]
#
#   OUT               the folder to write (wheels from an earlier run there are replaced)
#   --python X.Y      the target's Python (default: the one running this)
#   --platform TAG    pip platform tag(s) of the target, e.g. manylinux_2_28_x86_64 (repeatable;
#                     default: this machine's)
#   --have FREEZE     `python -m pip freeze` of the target: only what it lacks, or has outside our
#                     ranges, is written (dependencies too); without it, everything fpt needs
#   --with-torch      also torch + torchvision (FPT_TORCH_VERSION / FPT_TORCHVISION_VERSION), for
#                     a fresh venv; large (GBs with PyPI's CUDA build)
#
# Needs the network to the package index (run it where you have one); sdists without a wheel
# are built here, which is only accepted when they are pure Python or the target is this machine.
# tools/have/cuda-image.txt is the GPU image this project's device checks run on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case ${1:-} in -h | --help | "") sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;; esac
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
exec "$PY" tools/wheelhouse.py make "$@"
