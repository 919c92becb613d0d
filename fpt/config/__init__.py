"""Configs of either kind, LazyConfig (``.py``) or yacs (``.yaml``): reading them
(:mod:`.loading`), checking overrides and values (:mod:`.overrides`), and :class:`RunConfig`, the
one object the engine, the predictor and the demo ask their questions of (:mod:`.run`, with one
module per kind: :mod:`.lazy_run`, :mod:`.yacs_run`).

    cfg = load_config("configs/Shapes/mask_rcnn_R_18_FPN_tiny.py", ["train.device=cpu"])
    run = RunConfig(cfg)
    run.output_dir, run.test_dataset_names, run.build_model("cpu")
"""

from .classes import fit_num_classes
from .errors import ConfigError
from .loading import (
    TRAIN_DEFAULTS,
    add_training_config,
    fill_train_defaults,
    get_common_train,
    load_config,
)
from .overrides import check_overrides, check_rpe_specs
from .run import RunConfig, is_lazy_config

__all__ = [
    "TRAIN_DEFAULTS",
    "ConfigError",
    "RunConfig",
    "add_training_config",
    "check_overrides",
    "check_rpe_specs",
    "fill_train_defaults",
    "fit_num_classes",
    "get_common_train",
    "is_lazy_config",
    "load_config",
]
