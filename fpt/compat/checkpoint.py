"""Loading checkpoints that hold more than tensors, on torch >= 2.6.

What: ``DetectionCheckpointer`` loads ``.pth`` files with ``torch.load(weights_only=True)`` first
(safe: tensors and plain containers only). When that is refused because the file holds other
objects (numpy arrays, argparse namespaces: common in converted and third-party checkpoints,
such as MAE's), it logs one line naming the file and loads it with ``weights_only=False`` — the
user named that file, and a checkpoint is code they chose to trust, as with pickle (.pkl) files
which detectron2 always unpickles.
Why: torch 2.6 made ``weights_only=True`` the default, so fvcore's ``Checkpointer._load_file``
(torch.load without arguments) fails on such files (checkpoint/detection_checkpoint.py:88).
When it can go: when fvcore/detectron2 handle ``weights_only`` themselves.
"""
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


def apply():
    from fvcore.common.checkpoint import Checkpointer

    def _load_file(self, f):
        return load_trusted(f)

    Checkpointer._load_file = _load_file
