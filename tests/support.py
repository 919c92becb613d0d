"""Helpers shared by the tests (importable as ``support``: pytest puts tests/ on sys.path)."""

import importlib.util
import json
import os
import sys


import torch

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from detectron2.utils.events import EventStorage


def train_steps(model, batch, iters, optimizer):
    """``iters`` optimizer steps of ``model`` (train mode) on one fixed ``batch``.

    Every total loss must be finite. Returns (the total loss of each step, the last loss dict).
    """
    model.train()
    totals = []
    for it in range(iters):
        with EventStorage(it):
            loss_dict = model(batch)
        loss = sum(loss_dict.values())
        assert torch.isfinite(loss), {k: float(v.detach()) for k, v in loss_dict.items()}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    return totals, loss_dict


def assert_loss_falls(totals, factor=0.8):
    """The mean of the last two losses is below ``factor`` x the mean of the first two."""
    assert sum(totals[-2:]) / 2 < factor * sum(totals[:2]) / 2, totals


# ---- official DETR checkpoint layout (independent of tools/convert_detr_checkpoint.py) ----
COCO_CATEGORY_IDS = sorted(c["id"] for c in COCO_CATEGORIES if c["isthing"])


def detr_official_name(key):
    """Our key -> official DETR's (the inverse of the documented renames)."""
    if not key.startswith("backbone."):
        return key
    k = key[len("backbone.") :]
    k = k.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    for t in (1, 2, 3):
        k = k.replace(f"conv{t}.norm", f"bn{t}")
    for t in (1, 2, 3, 4):
        k = k.replace(f"res{t + 1}", f"layer{t}")
    if k.startswith("stem."):
        k = k[len("stem.") :]
    return "backbone.0.body." + k


def detr_to_official(state_dict):
    """A state dict of ours in the official layout: renamed keys, class head grown to 92 rows
    (row = COCO category id, unused ids random, row 91 = no object)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("class_embed.") and value.shape[0] == 81:
            full = torch.randn((92,) + tuple(value.shape[1:]), dtype=value.dtype)
            full[torch.as_tensor(COCO_CATEGORY_IDS)] = value[:80]
            full[91] = value[80]
            value = full
        out[detr_official_name(key)] = value.clone()
    return out


def shapes_val_subset(folder, num_images):
    """The first ``num_images`` shapes_val images as a COCO json in ``folder`` (to register with
    ``--register-coco``). Returns (json path, image folder)."""
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("shapes_val")  # generates the shapes set if needed
    images = os.path.dirname(dicts[0]["file_name"])
    with open(os.path.join(os.path.dirname(images), "shapes_val.json")) as f:
        coco = json.load(f)
    coco["images"] = coco["images"][:num_images]
    keep = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = os.path.join(folder, "shapes_val_subset.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path, images


def load_module(name, path):
    """The module of a script or file outside the packages (``demo/demo.py``, ``tools/...``),
    loaded once under ``name``."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]
