"""Reading a config file of either kind, for training, evaluation and the demo alike: a LazyConfig
(``.py``, or ``.yaml`` saved by ``LazyConfig.save``) or a yacs config (``.yaml`` with ``_BASE_`` /
upper-case keys), with command-line overrides checked (:mod:`fpt.config.overrides`) before
anything starts.

* LazyConfigs get :data:`TRAIN_DEFAULTS`, the ``train.*`` fields our trainer understands beyond
  detectron2's ``common/train.py`` (and that file's ``train`` when they have none), so upstream
  configs run unchanged.
* yacs configs get every node of ours (:func:`add_training_config`, ``add_fpt_config``,
  ``add_vitdet_config``, ``add_detr_config``) before the file is merged, so our yacs files load in
  every entry point.

Every user mistake here raises :class:`ConfigError`, whose message is one line naming the file or
key and what was expected: entry points print it and exit, instead of a traceback from deep
inside omegaconf, hydra or yacs.
"""

import os

import yaml
from omegaconf import DictConfig, OmegaConf

from detectron2.config import CfgNode, LazyConfig, get_cfg

from ..utils.text import first_line
from .errors import ConfigError
from .loggers import LOGGER_OPTIONS
from .overrides import check_overrides, check_rpe_specs, yacs_pairs

__all__ = [
    "TEST_DEFAULTS",
    "TRAIN_DEFAULTS",
    "add_training_config",
    "fill_train_defaults",
    "get_common_train",
    "load_config",
]

TRAIN_DEFAULTS = dict(
    device="cuda",  # "cuda" falls back to "cpu" (with a note) where CUDA is missing
    seed=-1,  # < 0: a random seed (logged)
    iter_size=1,  # batches accumulated per optimizer step
    amp=dict(enabled=False),  # fp16 + GradScaler on CUDA, bf16 autocast on CPU
    clip_gradients=dict(enabled=False, clip_type="norm", clip_value=1.0, norm_type=2.0),
    ema=dict(enabled=False, decay=0.9998),  # exponential moving average of the weights
    reference_world_size=0,  # > 0: scale batch/LR/iterations from this world size
    best_checkpoint=dict(metric="", mode="max"),  # e.g. "bbox/AP": keep model_best.pth
    plot=True,  # write metrics.png (loss and AP curves) at the end of training
    visualize=dict(num_images=0, score_thresh=0.5),  # predictions drawn at the end
    cudnn_benchmark=None,  # None: on when every batch has one input size (e.g. LSJ)
    # on CPU: glibc malloc keeps freed memory (fpt.utils.malloc): large tensors stop
    # page-faulting every iteration
    cpu_malloc_cache=True,
    # torch.compile of the backbone / transformer, training and inference (fpt.engine.compile)
    compile=dict(enabled=False, mode="default", dynamic=None, backend="inductor"),
    # fine-tuning (fpt.engine.finetune): parameter-name patterns frozen before the optimizer is
    # built (e.g. "backbone.bottom_up"); every val_loss_period iterations (0: never), the
    # losses on val_loss_batches batches of the test set, logged as val_<loss>
    freeze=[],
    val_loss_period=0,
    val_loss_batches=10,
    # where metrics, config and results go (fpt.config.loggers): also "wandb", "mlflow"
    loggers=["tensorboard", "json"],
    logger_options=LOGGER_OPTIONS,
)

# the ``test`` node of a LazyConfig (yacs: detectron2's ``TEST.AUG``)
TEST_DEFAULTS = dict(
    # test-time augmentation (fpt.modeling.tta): shortest edges min_sizes (longer edge at most
    # max_size) or, when min_sizes is None, scales of the test resize's size; each also flipped
    tta=dict(enabled=False, min_sizes=None, max_size=None, scales=[0.8, 1.0, 1.2], flip=True),
)

_QUOTES = "\"'"


def get_common_train():
    """detectron2's ``common/train.py`` ``train`` node, as a dict."""
    from detectron2.model_zoo import get_config

    return OmegaConf.to_container(get_config("common/train.py").train)


def fill_train_defaults(train, defaults=TRAIN_DEFAULTS):
    """Add the :data:`TRAIN_DEFAULTS` fields a ``train`` node lacks (in place; kept values win)."""
    for key, value in defaults.items():
        if key not in train:
            train[key] = value
        elif isinstance(value, dict) and isinstance(train[key], (dict, DictConfig)):
            fill_train_defaults(train[key], value)


# ---- yacs nodes of ours ----
def add_training_config(cfg):
    """yacs nodes for the training features LazyConfigs carry in ``train.*``."""
    cfg.SOLVER.ITER_SIZE = 1
    cfg.SOLVER.REFERENCE_WORLD_SIZE = cfg.SOLVER.get("REFERENCE_WORLD_SIZE", 0)
    cfg.MODEL_EMA = CfgNode({"ENABLED": False, "DECAY": 0.9998})
    cfg.SOLVER.COMPILE = CfgNode({"ENABLED": False, "MODE": "default"})
    cfg.CPU_MALLOC_CACHE = TRAIN_DEFAULTS["cpu_malloc_cache"]
    cfg.TEST.BEST_METRIC = ""
    cfg.LOGGERS = list(TRAIN_DEFAULTS["loggers"])
    cfg.LOGGER_OPTIONS = CfgNode(
        {
            name.upper(): {k.upper(): v for k, v in opts.items()}
            for name, opts in LOGGER_OPTIONS.items()
        }
    )
    cfg.DATASETS.REGISTER_COCO = []  # [[name, json_file, image_root], ...]: COCO jsons
    cfg.SOLVER.FREEZE = []  # train.freeze
    cfg.TEST.VAL_LOSS_PERIOD = 0  # train.val_loss_period
    cfg.TEST.VAL_LOSS_BATCHES = 10  # train.val_loss_batches


def _yacs_config_hooks():
    """The ``add_*_config`` functions of ours that every yacs config gets. (One of the config
    layer's two imports of the model layer, with ``RunConfig.with_tta``: each model's yacs keys
    are declared next to the model.)"""
    from ..modeling import add_detr_config, add_fpt_config, add_vitdet_config

    return (add_training_config, add_fpt_config, add_vitdet_config, add_detr_config)


# ---- loading ----
def load_config(path, opts=(), yacs_hooks=()):
    """
    Load a config file and apply checked overrides.

    Args:
        path (str): a LazyConfig ``.py``/``.yaml`` or a yacs ``.yaml`` file.
        opts (list[str]): overrides (see :func:`~fpt.config.overrides.check_overrides`).
            LazyConfig: ``key=value`` strings (hydra syntax), e.g.
            ``train.init_checkpoint=model.pth``; yacs: ``KEY VALUE`` pairs (``KEY=VALUE`` is
            accepted too), e.g. ``MODEL.WEIGHTS model.pth``.
        yacs_hooks (list[callable]): ``add_*_config(cfg)`` functions of other models to run on
            ``get_cfg()`` before a yacs file is merged, after ours.

    Returns:
        omegaconf.DictConfig (LazyConfig) or a frozen detectron2 ``CfgNode`` (yacs); wrap it in
        :class:`fpt.config.RunConfig` to ask it questions.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.splitext(path)[1] not in (".py", ".yaml", ".yml"):
        raise ConfigError(f"{path}: expected a config file ending in .py, .yaml or .yml")
    opts = list(opts or [])
    try:
        is_yacs = _is_yacs_file(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from None
    if is_yacs:
        return _load_yacs(path, opts, _yacs_config_hooks() + tuple(yacs_hooks))
    return _load_lazy(path, opts)


class _KindLoader(yaml.SafeLoader):
    """Safe YAML, reading the ``!!python/...`` tags of a saved LazyConfig (``LazyConfig.save``
    writes classes, functions and objects so) as None: enough to tell the kinds apart, nothing
    is imported or run."""


_KindLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _is_yacs_file(path):
    if path.endswith(".py"):
        return False
    with open(path) as f:
        content = yaml.load(f, Loader=_KindLoader) or {}
    if not isinstance(content, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config keys, got {type(content).__name__}"
        )
    return "_BASE_" in content or any(k.isupper() for k in content)


def _load_lazy(path, opts):
    try:
        cfg = LazyConfig.load(path)
    except (ImportError, NameError, AttributeError, KeyError, SyntaxError, OSError) as e:
        raise ConfigError(
            f"{path}: cannot load LazyConfig ({type(e).__name__}: {first_line(e)})"
        ) from None
    if "train" not in cfg:
        cfg.train = OmegaConf.create(get_common_train())
    fill_train_defaults(cfg.train)
    if "test" not in cfg:
        cfg.test = {}
    fill_train_defaults(cfg.test, TEST_DEFAULTS)
    check_overrides(cfg, opts)
    try:
        cfg = LazyConfig.apply_overrides(cfg, opts)
    except Exception as e:  # hydra's parser and omegaconf raise their own error types
        raise ConfigError(f"bad override in {opts}: {first_line(e)}") from None
    check_rpe_specs(cfg)
    return cfg


def _load_yacs(path, opts, hooks):
    cfg = get_cfg()
    for hook in hooks:
        hook(cfg)
    try:
        cfg.merge_from_file(path)
    except (KeyError, ValueError, AssertionError, OSError) as e:
        raise ConfigError(f"{path}: {first_line(e).strip(_QUOTES)}") from None
    opts = yacs_pairs(opts)
    check_overrides(cfg, opts)
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"bad override in {opts}: {first_line(e)}") from None
    check_rpe_specs(cfg)
    cfg.freeze()
    return cfg
