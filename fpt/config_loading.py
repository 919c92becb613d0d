"""Loading a config file of either kind: a LazyConfig (``.py``, or ``.yaml`` saved by
``LazyConfig.save``) or a yacs config (``.yaml`` with ``_BASE_`` / upper-case keys), and
applying command-line overrides to it.

Every user mistake here (missing file, unknown key, bad value) raises :class:`ConfigError`, whose
message is one line naming the file or key and what was expected: entry points print it and
exit, instead of a traceback from deep inside omegaconf or yacs.
"""
import difflib
import inspect
import os

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = [
    "ConfigError",
    "is_lazy_config",
    "load_config",
    "apply_lazy_overrides",
    "register_yacs_config_hook",
]

_YACS_CONFIG_HOOKS = []
_MISSING = object()
_QUOTES = "\"'"


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message is one line."""


def register_yacs_config_hook(hook):
    """Register ``hook(cfg)`` (e.g. ``add_vit_config``) to run on ``get_cfg()`` before a yacs file
    is merged, so that files using our keys load. Returns ``hook`` (usable as a decorator)."""
    if hook not in _YACS_CONFIG_HOOKS:
        _YACS_CONFIG_HOOKS.append(hook)
    return hook


def is_lazy_config(cfg):
    """True for a LazyConfig (omegaconf) object, False for a yacs ``CfgNode``."""
    return isinstance(cfg, DictConfig)


def _is_yacs_file(path):
    if path.endswith(".py"):
        return False
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(content).__name__}")
    return "_BASE_" in content or any(k.isupper() for k in content)


def load_config(path, opts=(), yacs_hooks=()):
    """
    Load a config file and apply overrides.

    Args:
        path (str): a LazyConfig ``.py``/``.yaml`` or a yacs ``.yaml`` file.
        opts (list[str]): overrides. LazyConfig: ``key=value`` strings (hydra syntax), e.g.
            ``train.init_checkpoint=model.pth``; yacs: ``KEY VALUE`` pairs (``KEY=VALUE`` is
            accepted too), e.g. ``MODEL.WEIGHTS model.pth``.
        yacs_hooks (list[callable]): ``add_*_config(cfg)`` functions to run on ``get_cfg()``
            before merging a yacs file, besides those registered with
            :func:`register_yacs_config_hook`.

    Returns:
        omegaconf.DictConfig (LazyConfig) or detectron2 ``CfgNode`` (yacs).
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.splitext(path)[1] not in (".py", ".yaml", ".yml"):
        raise ConfigError(f"{path}: expected a config file ending in .py, .yaml or .yml")
    opts = list(opts or [])
    try:
        is_yacs = _is_yacs_file(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    if is_yacs:
        return _load_yacs(path, opts, list(_YACS_CONFIG_HOOKS) + list(yacs_hooks))
    return _load_lazy(path, opts)


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_lazy(path, opts):
    from detectron2.config import LazyConfig

    try:
        cfg = LazyConfig.load(path)
    except (ImportError, NameError, AttributeError, KeyError, SyntaxError, OSError) as e:
        raise ConfigError(f"{path}: cannot load LazyConfig ({type(e).__name__}: {_first_line(e)})")
    return apply_lazy_overrides(cfg, opts)


def _load_yacs(path, opts, hooks):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    for hook in hooks:
        hook(cfg)
    try:
        cfg.merge_from_file(path)
    except (KeyError, ValueError, AssertionError, OSError) as e:
        raise ConfigError(f"{path}: {_first_line(e).strip(_QUOTES)}") from None
    if opts and all("=" in opt for opt in opts):  # KEY=VALUE form
        pairs = [part for opt in opts for part in opt.split("=", 1)]
    else:
        pairs = opts
    if len(pairs) % 2:
        raise ConfigError(f"yacs overrides must be KEY VALUE pairs, got {opts}")
    for key, value in zip(pairs[0::2], pairs[1::2]):
        _check_yacs_key(cfg, key)
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"bad override {key}={value}: {_first_line(e)}") from None
    cfg.freeze()
    return cfg


def _check_yacs_key(cfg, key):
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            prefix = ".".join(parts[:i])
            keys = list(node.keys()) if isinstance(node, dict) else []
            raise ConfigError(f"config has no key {key}{_suggest(part, keys, prefix)}")
        node = node[part]


def _suggest(name, candidates, prefix):
    close = difflib.get_close_matches(name, [str(c) for c in candidates], n=1)
    if not close:
        return ""
    return f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)"


def apply_lazy_overrides(cfg, opts):
    """
    Apply ``key=value`` overrides to a LazyConfig, like ``LazyConfig.apply_overrides`` but
    refusing keys that do not exist, so that a typo (``train.init_chekpoint=...``) is an error
    rather than a silently added key. A new key is accepted only under a ``LazyCall`` node whose
    target takes an argument of that name (e.g. ``model.roi_heads.box_predictor.test_topk_per_image``).
    """
    from detectron2.config import LazyConfig

    for opt in opts or []:
        if "=" not in opt:
            raise ConfigError(f"LazyConfig overrides must be key=value, got {opt!r}")
        key = opt.split("=", 1)[0].strip().lstrip("+~")
        _check_lazy_key(cfg, key)
        try:
            LazyConfig.apply_overrides(cfg, [opt])
        except Exception as e:  # hydra's parser raises its own error types
            raise ConfigError(f"bad override {opt!r}: {_first_line(e)}") from None
    return cfg


def _check_lazy_key(cfg, key):
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=_MISSING) if parent_key else cfg
    if parent is _MISSING or not isinstance(parent, (DictConfig, ListConfig)):
        head, _, last = parent_key.rpartition(".")
        siblings = _keys_of(OmegaConf.select(cfg, head, default=None) if head else cfg)
        raise ConfigError(f"config has no key {parent_key}{_suggest(last, siblings, head)}")
    if isinstance(parent, ListConfig):
        if not name.isdigit() or int(name) >= len(parent):
            raise ConfigError(f"config key {parent_key} is a list of {len(parent)}; no item {name}")
        return
    if name in parent or _target_accepts(parent, name):
        return
    raise ConfigError(f"config has no key {key}{_suggest(name, _keys_of(parent), parent_key)}")


def _keys_of(node):
    return [k for k in node.keys() if k != "_target_"] if isinstance(node, DictConfig) else []


def _target_accepts(node, name):
    """Whether the LazyCall ``node`` calls something that takes argument ``name``."""
    if "_target_" not in node:
        return False
    from detectron2.utils.registry import locate

    target = node._target_
    target = locate(target) if isinstance(target, str) else target
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True  # cannot tell (builtin): let the call itself decide
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
