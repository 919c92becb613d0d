"""The Trainer on a yacs config (registry builders), with a model's ``add_*_config`` hook."""

import json
import math

import pytest

from detectron2.config import CfgNode, get_cfg

from fpt.engine import ConfigError, Trainer, load_config
from fpt.config import add_training_config


def _tiny_yacs(output_dir):
    cfg = get_cfg()
    add_training_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    cfg.DATASETS.TRAIN = ("shapes_train",)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.ITER_SIZE = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 100
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 1
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


@pytest.mark.slow
def test_yacs_config_trains_with_accumulation(tmp_path):
    trainer = Trainer(_tiny_yacs(tmp_path))
    assert trainer._trainer.iter_size == 2 and trainer.samples_per_iter == 4
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert rows[-1]["iteration"] == 1  # the yacs path logs every 20 iterations and at the end
    assert all(math.isfinite(r["total_loss"]) and r["loss_mask"] > 0 for r in rows)
    assert (tmp_path / "model_final.pth").exists()


def test_yacs_file_with_a_model_config_hook(tmp_path):
    cfg = _tiny_yacs(tmp_path)

    def add_my_config(c):
        c.MODEL.MY_HEAD = CfgNode({"DEPTH": 2})

    add_my_config(cfg)
    cfg.MODEL.MY_HEAD.DEPTH = 5
    path = tmp_path / "my.yaml"
    path.write_text(cfg.dump())
    loaded = load_config(str(path), ["MODEL.MY_HEAD.DEPTH", "7"], yacs_hooks=[add_my_config])
    assert loaded.MODEL.MY_HEAD.DEPTH == 7 and loaded.SOLVER.ITER_SIZE == 2
    with pytest.raises(ConfigError, match="MY_HEAD"):
        load_config(str(path))  # without the hook the node is unknown
