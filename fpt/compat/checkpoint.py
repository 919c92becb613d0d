"""Loading checkpoints that hold more than tensors, on torch >= 2.6.

What: ``DetectionCheckpointer`` loads ``.pth`` files with ``torch.load(weights_only=True)`` first
(safe: tensors and plain containers only). When that is refused because the file holds other
objects (numpy arrays, argparse namespaces: common in converted and third-party checkpoints,
such as MAE's), it logs one line naming the file and loads it with ``weights_only=False`` — the
user named that file, and a checkpoint is code they chose to trust, as with pickle (.pkl) files
which detectron2 always unpickles.
Why: torch 2.6 made ``weights_only=True`` the default, so fvcore's ``Checkpointer._load_file``
(torch.load without arguments) fails on such files (checkpoint/detection_checkpoint.py:88).

Also: ``DetectionCheckpointer.load`` understands the ``?matching_heuristics=True`` suffix of
newer detectron2 (used by upstream ViTDet configs for MAE weights: load a checkpoint whose keys
lack the model's prefixes, e.g. ``blocks.0...`` into ``backbone.net.blocks.0...``).
Why: detectron2 0.6 treats the suffix as part of the file name ("Checkpoint ... not found").
When it can go: when fvcore/detectron2 handle ``weights_only`` themselves and detectron2 is >= 0.7.
"""
from urllib.parse import parse_qs, urlparse
import logging
import pickle

import torch


def load_trusted(path):
    """``torch.load`` a file on CPU: weights-only if possible, else the full unpickler (logged)."""
    with open(path, "rb") as f:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0][:200]
            logging.getLogger("fpt").warning(
                "%s holds non-tensor objects (%s); loading it with weights_only=False because "
                "you named it: only load checkpoints from sources you trust.", path, first,
            )
            f.seek(0)
            return torch.load(f, map_location="cpu", weights_only=False)


def _split_query(path):
    """``"x.pth?matching_heuristics=True"`` -> ``("x.pth", True)``."""
    parsed = urlparse(path)
    if not parsed.query:
        return path, False
    heuristics = parse_qs(parsed.query).get("matching_heuristics", ["False"])[0] == "True"
    return parsed._replace(query="").geturl(), heuristics


def apply():
    from detectron2.checkpoint import DetectionCheckpointer
    from fvcore.common.checkpoint import Checkpointer

    def _load_file(self, f):
        return load_trusted(f)

    Checkpointer._load_file = _load_file

    load, load_file = DetectionCheckpointer.load, DetectionCheckpointer._load_file

    def load_with_query(self, path, *args, **kwargs):
        self._matching_heuristics = False
        if path:
            path, self._matching_heuristics = _split_query(path)
        return load(self, path, *args, **kwargs)

    def load_file_with_query(self, filename):
        loaded = load_file(self, filename)
        if getattr(self, "_matching_heuristics", False):
            loaded["matching_heuristics"] = True
        return loaded

    DetectionCheckpointer.load = load_with_query
    DetectionCheckpointer._load_file = load_file_with_query
