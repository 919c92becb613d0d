#!/usr/bin/env python
"""Train or evaluate a detectron2 model from a LazyConfig (.py) or yacs (.yaml) config.

    python train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_tiny.py
    python train_net.py --config-file CFG --num-gpus 8 train.max_iter=90000
    python train_net.py --config-file CFG --eval-only train.init_checkpoint=model_final.pth

See ``python train_net.py --help`` and the README; the logic lives in :mod:`fpt.engine`.
"""

import os

# idle OpenMP threads sleep instead of spinning, so that the data-loader workers and other jobs
# get the cores they wait for (as demo.py does); set OMP_WAIT_POLICY yourself to choose otherwise
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (adapts detectron2 to the current stack; registers datasets)
from fpt.engine import run  # noqa: E402

if __name__ == "__main__":
    run()
