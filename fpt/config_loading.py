"""Loading a config file of either kind, for training, evaluation and the demo alike: a LazyConfig
(``.py``, or ``.yaml`` saved by ``LazyConfig.save``) or a yacs config (``.yaml`` with ``_BASE_`` /
upper-case keys), with command-line overrides checked before anything starts.

* LazyConfigs get :data:`TRAIN_DEFAULTS`, the ``train.*`` fields our trainer understands beyond
  detectron2's ``common/train.py`` (and that file's ``train`` when they have none), so upstream
  configs run unchanged.
* yacs configs get every node of ours (:func:`add_training_config`, ``add_fpt_config``,
  ``add_vitdet_config``) before the file is merged, so our yacs files load in every entry point.
* An override of a key that does not exist, or with a value of the wrong type, is refused,
  naming the key and the closest valid keys. A new LazyConfig key is accepted only under a
  ``LazyCall`` node whose target takes an argument of that name.

Every user mistake here raises :class:`ConfigError`, whose message is one line naming the file or
key and what was expected: entry points print it and exit, instead of a traceback from deep
inside omegaconf, hydra or yacs.
"""

import ast
import difflib
import inspect
import os

import yaml
from omegaconf import DictConfig, OmegaConf

from detectron2.config import CfgNode, LazyConfig, get_cfg
from detectron2.config.instantiate import locate

__all__ = [
    "TRAIN_DEFAULTS",
    "ConfigError",
    "add_training_config",
    "check_overrides",
    "check_rpe_specs",
    "fill_train_defaults",
    "first_line",
    "get_common_train",
    "is_lazy_config",
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
)

_QUOTES = "\"'"


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message is one line."""


def first_line(e):
    """The first line of an exception's message (its type name when empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def is_lazy_config(cfg):
    """True for a LazyConfig (omegaconf) object, False for a yacs ``CfgNode``."""
    return isinstance(cfg, DictConfig)


def get_common_train():
    """detectron2's ``common/train.py`` ``train`` node, as a dict."""
    from detectron2.model_zoo import get_config

    return OmegaConf.to_container(get_config("common/train.py").train)


# ---- yacs nodes of ours ----
def add_training_config(cfg):
    """yacs nodes for the training features LazyConfigs carry in ``train.*``."""
    cfg.SOLVER.ITER_SIZE = 1
    cfg.SOLVER.REFERENCE_WORLD_SIZE = cfg.SOLVER.get("REFERENCE_WORLD_SIZE", 0)
    cfg.MODEL_EMA = CfgNode({"ENABLED": False, "DECAY": 0.9998})
    cfg.TEST.BEST_METRIC = ""


def _yacs_config_hooks():
    """The ``add_*_config`` functions of ours that every yacs config gets."""
    from .modeling import add_detr_config, add_fpt_config, add_vitdet_config

    return (add_training_config, add_fpt_config, add_vitdet_config, add_detr_config)


# ---- loading ----
def load_config(path, opts=(), yacs_hooks=()):
    """
    Load a config file and apply checked overrides.

    Args:
        path (str): a LazyConfig ``.py``/``.yaml`` or a yacs ``.yaml`` file.
        opts (list[str]): overrides (see :func:`check_overrides`). LazyConfig: ``key=value``
            strings (hydra syntax), e.g. ``train.init_checkpoint=model.pth``; yacs: ``KEY VALUE``
            pairs (``KEY=VALUE`` is accepted too), e.g. ``MODEL.WEIGHTS model.pth``.
        yacs_hooks (list[callable]): ``add_*_config(cfg)`` functions of other models to run on
            ``get_cfg()`` before a yacs file is merged, after ours.

    Returns:
        omegaconf.DictConfig (LazyConfig) or a frozen detectron2 ``CfgNode`` (yacs).
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


def _is_yacs_file(path):
    if path.endswith(".py"):
        return False
    with open(path) as f:
        content = yaml.safe_load(f) or {}
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
    opts = _yacs_pairs(opts)
    check_overrides(cfg, opts)
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"bad override in {opts}: {first_line(e)}") from None
    check_rpe_specs(cfg)
    cfg.freeze()
    return cfg


def _yacs_pairs(opts):
    """``KEY VALUE`` pairs as a flat list, from that form or ``KEY=VALUE``."""
    if opts and all("=" in opt for opt in opts):
        return [part for opt in opts for part in opt.split("=", 1)]
    if len(opts) % 2:
        raise ConfigError(f"yacs overrides come in KEY VALUE pairs, got {opts}")
    return list(opts)


def fill_train_defaults(train, defaults=TRAIN_DEFAULTS):
    """Add the :data:`TRAIN_DEFAULTS` fields a ``train`` node lacks (in place; kept values win)."""
    for key, value in defaults.items():
        if key not in train:
            train[key] = value
        elif isinstance(value, dict) and isinstance(train[key], (dict, DictConfig)):
            fill_train_defaults(train[key], value)


# ---- value checks ----
_RPE_KEYS = ("rpe", "enc_rpe", "RPE", "ENC_RPE")  # iRPE specs: ViT attention, DETR encoder


def check_rpe_specs(cfg):
    """Raise :class:`ConfigError` for an iRPE spec that does not parse (any key named ``rpe`` or
    ``enc_rpe``; yacs: ``MODEL.VIT.RPE``, ``MODEL.DETR.ENC_RPE``), naming the key, before a model
    is built."""
    from .layers.irpe import parse_rpe_spec

    tree = OmegaConf.to_container(cfg, resolve=False) if is_lazy_config(cfg) else cfg
    for key, value in _find_keys(tree, _RPE_KEYS):
        if value is None or (key.isupper() and value in ("", "none", "None")):
            continue  # yacs writes "no iRPE" as an empty string
        try:
            parse_rpe_spec(value)
        except ValueError as e:
            raise ConfigError(f"config key {key!r}: {first_line(e)}") from None


def _find_keys(node, names, prefix=""):
    """(dotted key, value) of every entry named one of ``names`` in nested dicts/lists."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        key = f"{prefix}{k}"
        if k in names:
            yield key, v
        elif isinstance(v, (dict, list)):
            yield from _find_keys(v, names, key + ".")


# ---- override checks ----
def check_overrides(cfg, overrides):
    """Raise :class:`ConfigError` for the first override with an unknown key or a wrong type.

    Args:
        cfg: a LazyConfig (DictConfig) or yacs ``CfgNode``.
        overrides (list[str]): ``key=value`` (LazyConfig, hydra syntax: a leading ``+``/``~``
            is allowed) or alternating ``KEY VALUE`` (yacs).
    """
    if isinstance(cfg, CfgNode):
        overrides = _yacs_pairs(list(overrides))
        pairs = [(k, _parse_yacs_value(v), v) for k, v in zip(overrides[0::2], overrides[1::2])]
        tree = cfg
    else:
        pairs = [_parse_lazy_override(item) for item in overrides]
        tree = OmegaConf.to_container(cfg, resolve=False)
    valid = None
    for key, new, text in pairs:
        found, old, parent = _lookup(tree, key)
        if not found:
            if parent is not None and _target_accepts(parent, key.split(".")[-1]):
                continue
            valid = valid or _flat_keys(tree)
            close = difflib.get_close_matches(
                key, valid, n=3, cutoff=0.6
            ) or difflib.get_close_matches(
                key.split(".")[-1], [k.split(".")[-1] for k in valid], n=3
            )
            hint = f"; closest valid keys: {', '.join(close)}" if close else ""
            raise ConfigError(f"unknown config key {key!r} in override '{key}={text}'{hint}")
        if not _type_ok(old, new):
            raise ConfigError(
                f"config key {key!r} expects {_type_name(old)} (current value: {old!r}), "
                f"got {_type_name(new)} {new!r}"
            )


def _parse_lazy_override(item):
    """(key, value, text) of a hydra ``key=value`` override, the value parsed as hydra does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = (s.strip() for s in item.split("=", 1))
    try:
        value = OverridesParser.create().parse_overrides([item])[0].value()
    except Exception as e:  # hydra's OverrideParseException and friends
        raise ConfigError(f"bad override {item!r}: {first_line(e)}") from None
    return key.lstrip("+~"), value, text


def _parse_yacs_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _type_ok(old, new):
    if old is None or new is None:
        return True
    if isinstance(old, str) and old.startswith("${"):  # interpolation
        return True
    if isinstance(old, bool):
        return isinstance(new, bool)
    if isinstance(old, int):
        return isinstance(new, int) and not isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    if isinstance(old, str):
        return isinstance(new, str)
    if isinstance(old, (list, tuple)):
        return isinstance(new, (list, tuple))
    if isinstance(old, dict):
        return isinstance(new, dict)
    return True


def _type_name(value):
    return "dict" if isinstance(value, dict) else type(value).__name__


def _flat_keys(node, prefix=""):
    """Dotted paths of every key of a nested dict (lists are leaves)."""
    keys = []
    for k, v in node.items():
        keys.append(f"{prefix}{k}")
        if isinstance(v, dict):
            keys += _flat_keys(v, f"{prefix}{k}.")
    return keys


def _lookup(tree, key):
    """(found, value, parent) of a dotted key in a nested dict/list; ``parent`` is the
    container of the last part when only that part is missing."""
    node, parts = tree, key.split(".")
    for i, part in enumerate(parts):
        parent = node
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None, (parent if i == len(parts) - 1 else None)
    return True, node, parent


def _accepted_arguments(target):
    """(names, open) of the keyword arguments ``target`` takes; ``open`` when it takes any.

    A class whose ``__init__`` forwards ``**kwargs`` to its base (as detectron2's
    ``StandardROIHeads`` does) takes the base's arguments too.
    """
    names = set()
    functions = (
        [
            c.__dict__["__init__"]
            for c in target.__mro__
            if "__init__" in c.__dict__ and c is not object
        ]
        if inspect.isclass(target)
        else [target]
    )
    for fn in functions:
        params = inspect.signature(fn).parameters
        names |= set(params)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names, False
    return names, True


def _target_accepts(parent, name):
    """Whether a LazyCall node ``parent`` (a dict) may take a new argument ``name``."""
    if not isinstance(parent, dict) or "_target_" not in parent:
        return False
    target = parent["_target_"]
    try:
        target = locate(target) if isinstance(target, str) else target
        names, open_ = _accepted_arguments(target)
    except (TypeError, ValueError, ImportError):
        return True  # cannot tell (a builtin): let instantiate() decide
    return open_ or name in names
