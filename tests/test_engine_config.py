"""Override validation and train defaults (fpt.config), world-size scaling
(fpt.config.lazy_run)."""

import os

import pytest

from fpt.config import TRAIN_DEFAULTS, ConfigError, check_overrides, load_config
from fpt.config.lazy_run import scale_to_world_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs/Shapes/mask_rcnn_R_18_FPN_tiny.py")


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY)


def test_valid_overrides_are_applied():
    cfg = load_config(
        TINY,
        [
            "train.max_iter=7",
            "optimizer.lr=1",
            "train.amp.enabled=True",
            "dataloader.train.total_batch_size=2",
        ],
    )
    assert cfg.train.max_iter == 7 and cfg.optimizer.lr == 1 and cfg.train.amp.enabled
    assert cfg.dataloader.train.total_batch_size == 2


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "train.max_itr=3",
            "unknown config key 'train.max_itr'.*closest valid keys: train.max_iter",
        ),
        ("optimizer.learning_rate=0.1", "unknown config key 'optimizer.learning_rate'.*"),
        ("model.roi_heads.num_clases=2", "closest valid keys: model.roi_heads.num_classes"),
        ("train.max_iter=abc", "'train.max_iter' expects int .*got str 'abc'"),
        ("train.max_iter=2.5", "'train.max_iter' expects int .*got float 2.5"),
        ("train.amp=True", "'train.amp' expects dict"),
        ("train.amp.enabled=1", "'train.amp.enabled' expects bool"),
        ("model.pixel_std=3", "'model.pixel_std' expects list"),
        ("train.max_iter", "is not of the form key=value"),
    ],
)
def test_bad_overrides_are_rejected_with_closest_keys(cfg, override, expected):
    with pytest.raises(ConfigError, match=expected):
        check_overrides(cfg, [override])


def test_new_argument_of_a_lazycall_target_is_accepted(cfg):
    # RPN.__init__ has `smooth_l1_beta`, absent from the config: a valid new argument
    check_overrides(cfg, ["model.proposal_generator.smooth_l1_beta=0.1"])
    with pytest.raises(ConfigError, match="smooth_l1_betta"):
        check_overrides(cfg, ["model.proposal_generator.smooth_l1_betta=0.1"])


def test_upstream_config_gets_our_train_defaults():
    from detectron2.model_zoo import get_config_file

    cfg = load_config(
        get_config_file("common/train.py").replace(
            "common/train.py", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py"
        ),
        ["train.iter_size=2"],
    )
    assert cfg.train.iter_size == 2
    for key in TRAIN_DEFAULTS:
        assert key in cfg.train
    assert cfg.train.max_iter == 90000  # detectron2's own fields untouched


def test_yacs_overrides_are_checked():
    from detectron2.model_zoo import get_config_file

    path = get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    cfg = load_config(path, ["SOLVER.MAX_ITER", "10", "SOLVER.ITER_SIZE", "2"])
    assert cfg.SOLVER.MAX_ITER == 10 and cfg.SOLVER.ITER_SIZE == 2
    with pytest.raises(ConfigError, match="closest valid keys: SOLVER.MAX_ITER"):
        load_config(path, ["SOLVER.MAX_ITERS", "10"])
    with pytest.raises(ConfigError, match="'SOLVER.BASE_LR' expects float"):
        load_config(path, ["SOLVER.BASE_LR", "fast"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: configs/nope.py"):
        load_config("configs/nope.py")


def test_scale_to_world_size():
    cfg = load_config(TINY, ["train.reference_world_size=1"])
    batch, lr, iters = (cfg.dataloader.train.total_batch_size, cfg.optimizer.lr, cfg.train.max_iter)
    scale_to_world_size(cfg, 2)
    assert cfg.dataloader.train.total_batch_size == 2 * batch
    assert cfg.optimizer.lr == pytest.approx(2 * lr)
    assert cfg.train.max_iter == iters // 2
    assert cfg.train.reference_world_size == 2  # invariant kept: scaling again is a no-op
    scale_to_world_size(cfg, 2)
    assert cfg.train.max_iter == iters // 2


def test_yacs_file_with_our_model_nodes_loads(tmp_path):
    # every yacs config gets our add_*_config nodes (training, FPT, ViTDet) before merging
    path = tmp_path / "ours.yaml"
    path.write_text(
        "VERSION: 2\nMODEL:\n  FPT: {OUT_CHANNELS: 64}\n  VIT: {DEPTH: 2}\nSOLVER: {ITER_SIZE: 2}\n"
    )
    cfg = load_config(str(path), ["MODEL.FPT.NORM=GN"])
    assert (cfg.MODEL.FPT.OUT_CHANNELS, cfg.MODEL.VIT.DEPTH, cfg.SOLVER.ITER_SIZE) == (64, 2, 2)
    assert cfg.MODEL.FPT.NORM == "GN" and cfg.MODEL_EMA.ENABLED is False
    with pytest.raises(ConfigError, match="closest valid keys: MODEL.FPT.OUT_CHANNELS"):
        load_config(str(path), ["MODEL.FPT.OUT_CHANELS", "3"])
