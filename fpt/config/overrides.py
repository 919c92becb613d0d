"""Command-line overrides, checked before anything starts, and value checks of a loaded config.

* An override of a key that does not exist, or with a value of the wrong type, is refused,
  naming the key and the closest valid keys. A new LazyConfig key is accepted only under a
  ``LazyCall`` node whose target takes an argument of that name.
* iRPE specs (:func:`check_rpe_specs`) are parsed once, naming the key of a bad one.
"""

import ast
import difflib
import inspect

from omegaconf import OmegaConf

from detectron2.config.instantiate import locate

from ..utils.text import first_line
from .errors import ConfigError
from .run import is_lazy_config

__all__ = ["check_overrides", "check_rpe_specs", "overridden_keys", "yacs_pairs"]

_RPE_KEYS = ("rpe", "enc_rpe", "RPE", "ENC_RPE")  # iRPE specs: ViT attention, DETR encoder


def yacs_pairs(opts):
    """``KEY VALUE`` pairs as a flat list, from that form or ``KEY=VALUE``."""
    if opts and all("=" in opt for opt in opts):
        return [part for opt in opts for part in opt.split("=", 1)]
    if len(opts) % 2:
        raise ConfigError(f"yacs overrides come in KEY VALUE pairs, got {opts}")
    return list(opts)


def overridden_keys(cfg, overrides):
    """The keys ``overrides`` set (see :func:`check_overrides` for their forms)."""
    if is_lazy_config(cfg):
        return [item.lstrip("+~").split("=", 1)[0] for item in overrides]
    return yacs_pairs(list(overrides))[0::2]


def _as_tree(cfg):
    """The config as nested dicts/lists (a yacs ``CfgNode`` is a dict already)."""
    return OmegaConf.to_container(cfg, resolve=False) if is_lazy_config(cfg) else cfg


# ---- value checks ----
def check_rpe_specs(cfg):
    """Raise :class:`ConfigError` for an iRPE spec that does not parse (any key named ``rpe`` or
    ``enc_rpe``; yacs: ``MODEL.VIT.RPE``, ``MODEL.DETR.ENC_RPE``), naming the key, before a model
    is built."""
    from ..layers.irpe import parse_rpe_spec

    for key, value in _find_keys(_as_tree(cfg), _RPE_KEYS):
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
    if is_lazy_config(cfg):
        pairs = [_parse_lazy_override(item) for item in overrides]
    else:
        overrides = yacs_pairs(list(overrides))
        pairs = [(k, _parse_yacs_value(v), v) for k, v in zip(overrides[0::2], overrides[1::2])]
    tree = _as_tree(cfg)
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
