"""MAE / timm ViT weights -> a ViTDet model's ``backbone.net``.

MAE and timm ViT checkpoints name parameters ``cls_token``, ``pos_embed`` (1, 1 + S*S, C),
``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
``norm.*``/``fc_norm.*``/``head.*``. Those that our :class:`fpt.modeling.ViT` has are copied
(``pos_embed`` resized bicubically when its grid differs); classifier-only entries are reported
as unused; what the checkpoint lacks (rel-pos tables, pyramid, detection heads) is reported as
new. Any other shape mismatch is an error naming the key.
"""

import logging
import pickle

import numpy as np
import torch

from fpt.compat.checkpoint import load_trusted
from fpt.layers.rel_pos import get_abs_pos

__all__ = [
    "read_checkpoint",
    "vit_pretrained_state_dict",
    "load_vit_pretrained",
    "convert_to_model_state_dict",
    "summarize_keys",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "module")


def read_checkpoint(path):
    """Read a ``.pth``/``.pt`` (torch) or ``.pkl`` (detectron2 pickle) file into a flat dict of
    tensors, unwrapping ``{"model": ...}`` / ``{"state_dict": ...}`` containers."""
    if str(path).endswith(".pkl"):
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    else:
        data = load_trusted(path)
    while isinstance(data, dict):
        inner = next((data[k] for k in _WRAPPER_KEYS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        if isinstance(v, torch.Tensor):
            out[k] = v
    return out


def _resize_pos_embed(pos_embed, target_shape, key):
    """(1, [1 +] S*S, C) -> (1, [1 +] T*T, C), bicubic on the grid, cls slot kept."""
    n_src, n_dst = pos_embed.shape[1], target_shape[1]
    for has_cls in (True, False):
        s, t = n_src - has_cls, n_dst - has_cls
        gs, gt = int(round(s**0.5)), int(round(t**0.5))
        if gs * gs == s and gt * gt == t and pos_embed.shape[2] == target_shape[2]:
            cls, grid = pos_embed[:, :has_cls], pos_embed[:, has_cls:]
            grid = get_abs_pos(grid.float(), False, (gt, gt))  # the model's own resize
            return torch.cat([cls, grid.reshape(1, gt * gt, -1).to(pos_embed.dtype)], dim=1)
    raise ValueError(
        f"{key}: checkpoint shape {tuple(pos_embed.shape)} cannot be resized to "
        f"{tuple(target_shape)} (expected square grids and equal channels)"
    )


def vit_pretrained_state_dict(checkpoint, target_state_dict, prefix=""):
    """Map an MAE/timm ViT state dict onto ``target_state_dict`` keys under ``prefix``.

    Args:
        checkpoint (dict[str, Tensor]): MAE/timm keys (``blocks.0.attn.qkv.weight``, ...).
        target_state_dict (dict[str, Tensor]): the model's state dict (for names and shapes).
        prefix (str): where the ViT lives in the model, e.g. ``"backbone.net."``.
    Returns:
        (state_dict, report): the tensors to load (model keys), and a dict with lists
        ``loaded``, ``resized``, ``unused`` (checkpoint keys) and ``new`` (model keys left as
        initialised).
    """
    state_dict, loaded, resized, unused = {}, [], [], []
    for key, value in checkpoint.items():
        target = prefix + key
        if target not in target_state_dict:
            unused.append(key)
            continue
        shape = target_state_dict[target].shape
        if value.shape != shape:
            if key != "pos_embed":
                raise ValueError(
                    f"{key}: checkpoint shape {tuple(value.shape)} != model shape {tuple(shape)} "
                    f"({target})"
                )
            value = _resize_pos_embed(value, shape, key)
            resized.append(key)
        state_dict[target] = value
        loaded.append(key)
    new = [k for k in target_state_dict if k not in state_dict]
    return state_dict, {"loaded": loaded, "resized": resized, "unused": unused, "new": new}


def summarize_keys(keys, detailed_prefix="backbone.net."):
    """A short text for a list of parameter names: block indices become ``*``; names under
    ``detailed_prefix`` (the ViT) are listed in full, others by their top two modules."""
    groups = {}
    for k in keys:
        parts = ["*" if p.isdigit() else p for p in k.split(".")]
        if not k.startswith(detailed_prefix) and len(parts) > 2:
            parts = parts[:2] + ["*"]
        name = ".".join(parts)
        groups[name] = groups.get(name, 0) + 1
    return ", ".join(f"{g} ({n})" if n > 1 else g for g, n in groups.items())


def load_vit_pretrained(model, checkpoint, prefix=None):
    """Load MAE/timm ViT weights into ``model`` and log what was loaded / new / unused.

    Args:
        model (nn.Module): a ViTDet model (ViT under ``backbone.net``), a SimpleFeaturePyramid
            (``net``) or a bare :class:`fpt.modeling.ViT`.
        checkpoint (str or dict): a file path (``.pth``/``.pkl``) or a state dict.
        prefix (str or None): where the ViT lives; default: found from the model.
    Returns:
        dict: the report of :func:`vit_pretrained_state_dict`.
    """
    name = checkpoint if isinstance(checkpoint, str) else "state dict"
    if isinstance(checkpoint, str):
        checkpoint = read_checkpoint(checkpoint)
    target = model.state_dict()
    if prefix is None:
        prefix = next(
            (p for p in ("backbone.net.", "net.", "") if p + "patch_embed.proj.weight" in target),
            None,
        )
        if prefix is None:
            raise ValueError(f"{type(model).__name__} has no ViT (no patch_embed.proj.weight)")
    state_dict, report = vit_pretrained_state_dict(checkpoint, target, prefix)
    if not report["loaded"]:
        raise ValueError(
            f"{name}: no key matches the ViT under {prefix!r}; expected MAE/timm keys such as "
            "'blocks.0.attn.qkv.weight' (checkpoint keys start with: "
            f"{sorted(checkpoint)[:3]})"
        )
    model.load_state_dict(state_dict, strict=False)
    logger.info(
        "Loaded %d ViT tensors from %s into %s%s",
        len(report["loaded"]),
        name,
        prefix or "the model",
        (f"; resized: {', '.join(report['resized'])}" if report["resized"] else ""),
    )
    if report["new"]:
        logger.info("New (not in the checkpoint): %s", summarize_keys(report["new"]))
    if report["unused"]:
        logger.info("Unused checkpoint entries: %s", summarize_keys(report["unused"]))
    return report


def convert_to_model_state_dict(checkpoint, target_state_dict):
    """Turn an official ViTDet (detectron2 keys) or an MAE/timm checkpoint into a state dict
    for the model whose state dict is ``target_state_dict``.

    Returns:
        (state_dict, report): report lists ``loaded``, ``resized``, ``unused`` (checkpoint keys)
        and ``new`` (model keys the checkpoint does not provide).
    Raises:
        ValueError: on a shape mismatch (naming the key), or if nothing matches.
    """
    if not any(k.startswith("backbone.") for k in checkpoint):
        state_dict, report = vit_pretrained_state_dict(
            checkpoint, target_state_dict, "backbone.net."
        )
    else:
        state_dict = {}
        for key, value in checkpoint.items():
            if key in target_state_dict and value.shape != target_state_dict[key].shape:
                raise ValueError(
                    f"{key}: checkpoint shape {tuple(value.shape)} != model shape "
                    f"{tuple(target_state_dict[key].shape)}"
                )
            if key in target_state_dict:
                state_dict[key] = value
        report = {
            "loaded": list(state_dict),
            "resized": [],
            "unused": [k for k in checkpoint if k not in target_state_dict],
            "new": [k for k in target_state_dict if k not in state_dict],
        }
    if not state_dict:
        raise ValueError(
            "no checkpoint key matches the model; expected detectron2 ViTDet keys "
            "('backbone.net.blocks.0...') or MAE/timm keys ('blocks.0...'), got "
            f"{sorted(checkpoint)[:3]}"
        )
    return state_dict, report
