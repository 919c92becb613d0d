"""detectron2's own LazyConfigs, unchanged, through ``train_net.py`` and ``demo/demo.py``.

- ``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py`` from the installed detectron2's model
  zoo (0.6 and main package it): 2 training iterations, evaluation, then the demo with the
  trained weights.
- main's ``projects/ViTDet/configs/COCO/{mask,cascade_mask}_rcnn_vitdet_b_100ep.py``, which live
  in detectron2's source tree only (taken from ``../shared/vendor``'s archive when it is there):
  1 training iteration, evaluation, then the demo. They build detectron2 main's own ViT, so they
  need detectron2 main (0.6 has no ``detectron2.modeling.backbone.vit``).

Only command-line overrides make them small and point them at 2 shapes images: 2 ViT blocks
instead of 12, batch 1, random initial weights (no download), 3 classes, fp32.
"""

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from detectron2 import model_zoo

from support import shapes_val_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDOR = sorted(glob.glob(os.path.join(REPO, "..", "shared", "vendor", "detectron2-*.tar.gz")))
HAS_VIT = importlib.util.find_spec("detectron2.modeling.backbone.vit") is not None
NUM_IMAGES = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return shapes_val_subset(str(tmp_path_factory.mktemp("tiny")), NUM_IMAGES)


@pytest.fixture(scope="module")
def photos(tiny, tmp_path_factory):
    """A folder with the images of ``tiny`` (the demo's input)."""
    folder = tmp_path_factory.mktemp("photos")
    with open(tiny[0]) as f:
        for image in json.load(f)["images"]:
            shutil.copy(os.path.join(tiny[1], image["file_name"]), folder)
    return folder


def _run(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _train_evaluate_and_draw(config_file, tiny, photos, out, *overrides):
    """train_net.py (a short training + evaluation), then demo/demo.py with the weights."""
    common = ["model.roi_heads.num_classes=3", *overrides]
    log = _run(
        "train_net.py",
        "--config-file",
        config_file,
        "--register-coco",
        "tiny",
        *tiny,
        "dataloader.train.dataset.names=tiny",
        "dataloader.test.dataset.names=tiny",
        "dataloader.train.total_batch_size=1",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "train.init_checkpoint=",
        f"train.output_dir={out}",
        *common,
    )
    assert "Evaluation results for tiny" in log and "copypaste: Task: bbox" in log  # COCOEvaluator
    weights = out / "model_final.pth"
    assert weights.is_file() and list((out / "inference").glob("results_iter*.json"))
    drawn = out / "drawn"
    _run(
        "demo/demo.py",
        "--config-file",
        config_file,
        "--input",
        str(photos),
        "--output",
        str(drawn),
        "--opts",
        f"train.init_checkpoint={weights}",
        *common,
    )
    assert len(list(drawn.glob("*.png"))) == NUM_IMAGES  # every image of the folder drawn


@pytest.mark.slow
def test_model_zoo_mask_rcnn_lazyconfig(tiny, photos, tmp_path):
    config_file = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
    _train_evaluate_and_draw(config_file, tiny, photos, tmp_path, "train.max_iter=2")


@pytest.fixture(scope="module")
def vitdet_configs(tmp_path_factory):
    if not VENDOR:
        pytest.skip(
            "detectron2's source archive (../shared/vendor/detectron2-*.tar.gz) is not "
            "here: projects/ViTDet/configs are in its source tree only"
        )
    if not HAS_VIT:
        pytest.skip(
            "this detectron2 has no detectron2.modeling.backbone.vit (0.6): main's "
            "ViTDet configs need detectron2 main"
        )
    folder = tmp_path_factory.mktemp("upstream")
    with tarfile.open(VENDOR[-1]) as tar:
        members = [m for m in tar.getmembers() if "/projects/ViTDet/configs/" in m.name]
        tar.extractall(folder, members=members, filter="data")
    (root,) = glob.glob(str(folder / "*" / "projects" / "ViTDet" / "configs" / "COCO"))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_vitdet_b_100ep", "cascade_mask_rcnn_vitdet_b_100ep"])
def test_main_vitdet_configs(vitdet_configs, name, tiny, photos, tmp_path):
    _train_evaluate_and_draw(
        os.path.join(vitdet_configs, name + ".py"),
        tiny,
        photos,
        tmp_path,
        "train.max_iter=1",
        "model.backbone.net.depth=2",
        # the configs train with AMP: bf16 autocast on CPU, whose convolutions run through a
        # slow reference kernel on CPUs without bf16 instructions (minutes per iteration)
        "train.amp.enabled=False",
    )
