"""Official DETR / DETR-with-iRPE checkpoints -> our :class:`fpt.modeling.detr.DETR`.

Official DETR (``facebookresearch/detr``) and Cream's DETR-with-iRPE save ``{"model":
state_dict, ...}`` with a torchvision ResNet under ``backbone.0.body.``. Conversion renames the
backbone to detectron2's ResNet names (as DETR's own ``d2/converter.py``), keeps every other name
(``input_proj``, ``query_embed``, ``bbox_embed``, ``transformer.*`` including the iRPE tables
``...self_attn.rpe_{q,k,v}.lookup_table_*``), and cuts the 92-way class head (COCO category ids
0..90 + "no object") to 81 rows: the 80 COCO categories in sorted id order (detectron2's
contiguous ids), then "no object".
"""

import re

import torch

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from fpt.layers.irpe import METHODS, num_buckets

__all__ = [
    "COCO_CATEGORY_IDS",
    "REQUIRED_KEYS",
    "NotADetrCheckpoint",
    "check_detr_state_dict",
    "convert_detr_state_dict",
    "infer_rpe_spec",
    "rename_backbone_key",
]

# the 80 COCO category ids, sorted: contiguous class k of detectron2 is COCO_CATEGORY_IDS[k]
COCO_CATEGORY_IDS = sorted(c["id"] for c in COCO_CATEGORIES if c["isthing"])
REQUIRED_KEYS = (
    "class_embed.weight",
    "query_embed.weight",
    "transformer.encoder.layers.0.self_attn.in_proj_weight",
)
_BACKBONE_PREFIX = "backbone.0.body."
_RPE_KEY = re.compile(
    r"\.self_attn\.rpe_([qkv])\.(?:(rp_rows|rp_cols)\.)?lookup_table_(bias|weight)$"
)


class NotADetrCheckpoint(ValueError):
    """The state dict lacks DETR's keys (message: one line)."""


def check_detr_state_dict(state_dict):
    """Raise :class:`NotADetrCheckpoint` unless ``state_dict`` has official DETR's keys."""
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if not any(k.startswith(_BACKBONE_PREFIX) for k in state_dict):
        missing.append(_BACKBONE_PREFIX + "*")
    if missing:
        sample = ", ".join(sorted(state_dict)[:3]) or "no keys"
        raise NotADetrCheckpoint(
            f"not a DETR checkpoint (missing {', '.join(missing)}; its keys start with {sample})"
        )


def rename_backbone_key(key):
    """``backbone.0.body.X`` (torchvision ResNet) -> ``backbone.X'`` (detectron2 ResNet):
    ``stem.`` before stem keys, ``layer{t}`` -> ``res{t+1}``, ``bn{t}`` -> ``conv{t}.norm``,
    ``downsample.0`` -> ``shortcut``, ``downsample.1`` -> ``shortcut.norm``."""
    k = key[len(_BACKBONE_PREFIX) :]
    if "layer" not in k:
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return "backbone." + k


def convert_detr_state_dict(state_dict):
    """
    Args:
        state_dict (dict[str, Tensor]): official DETR / DETR-with-iRPE ``model`` entry.
    Returns:
        (state_dict, report): our keys; ``report`` lists ``renamed`` (backbone keys, ours),
        ``kept`` (same name), ``class_head`` (keys cut 92 -> 81, empty otherwise).
    Raises:
        NotADetrCheckpoint: when the keys are not DETR's.
    """
    check_detr_state_dict(state_dict)
    out, renamed, kept, class_head = {}, [], [], []
    for key, value in state_dict.items():
        if key.startswith(_BACKBONE_PREFIX):
            new = rename_backbone_key(key)
            renamed.append(new)
        else:
            new = key
            kept.append(new)
        if key in ("class_embed.weight", "class_embed.bias") and value.shape[0] == 92:
            rows = torch.as_tensor(COCO_CATEGORY_IDS + [91])
            value = value[rows]
            class_head.append(new)
        out[new] = value
    return out, {"renamed": renamed, "kept": kept, "class_head": class_head}


def infer_rpe_spec(state_dict):
    """An iRPE spec whose tables have the names and shapes of the file's encoder tables, or
    None when it has none.

    The file does not record the bucket method or ratio: ``euc`` and ``quant`` tables have the
    same shapes, and ratios with the same ``int(2 ratio)`` too. The result is good for checking
    names and shapes, not for running: pass the spec the model was trained with
    (``model.transformer.enc_rpe=...``).
    """
    on, modes, cross, nb, heads = set(), set(), False, None, None
    for key, value in state_dict.items():
        m = _RPE_KEY.search(key)
        if not m or ".encoder.layers.0." not in key:
            continue
        letter, part, kind = m.groups()
        on.add(letter)
        modes.add("bias" if kind == "bias" else "ctx")
        cross = cross or part is not None
        heads = value.shape[0]
        nb = value.shape[-1] if (kind == "bias" or letter != "v") else value.shape[-2]
    if not on:
        return None
    if len(modes) != 1:
        raise ValueError(f"iRPE tables mix bias and ctx modes: {sorted(modes)}")
    side = round(nb**0.5)
    if not cross and side * side == nb and side % 2 == 1:
        method, beta_int = "product", (side - 1) // 2
    else:
        method, beta_int = ("cross" if cross else "euc"), (nb - 1) // 2
    if beta_int < 1 or num_buckets(method, beta_int / 2) != nb:
        raise ValueError(f"iRPE tables with {nb} buckets match no method of {METHODS}")
    ratio = beta_int / 2  # int(2 ratio) = beta_int
    mode = modes.pop()
    shared = int(heads == 1)
    rpe_on = "".join(c for c in "qkv" if c in on)
    return f"rpe-{float(ratio)}-{method}-{mode}-{shared}-{rpe_on}"
