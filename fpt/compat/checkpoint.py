"""Loading checkpoints safely on torch >= 2.6, and the ``?matching_heuristics=True`` suffix.

What: ``DetectionCheckpointer``/fvcore's ``Checkpointer`` load ``.pth`` files with
:func:`load_checkpoint`: ``torch.load(weights_only=True)`` with an allow-list
(``torch.serialization.safe_globals``) of the non-tensor objects that detectron2, MAE, timm and
official DETR/ViTDet checkpoints hold: numpy arrays, dtypes and scalars (as written by numpy 1
and 2) and ``argparse.Namespace`` (their training ``args``), on top of torch's own (tensors,
``OrderedDict``, ``set``, ``torch.Size``, ...). The states our trainer saves (optimizer, LR
scheduler, grad scaler, iteration, sampler, RNG states) are tensors and plain containers.
A file holding anything else is refused with :class:`UnsafeCheckpointError`, one line naming the
offending globals and the opt-in: the environment variable ``FPT_UNSAFE_LOAD=1``, which
:func:`allow_unsafe_load` sets (and so do ``--unsafe-load`` command-line flags) — then the file
is fully unpickled (``weights_only=False``), with one logged line.
detectron2's ``.pkl`` files (the model zoo's Detectron1/2 weights) are unpickled by detectron2
itself (checkpoint/detection_checkpoint.py:59), as before: they do not pass through here.
Why: torch 2.6 made ``weights_only=True`` the default, so fvcore's ``Checkpointer._load_file``
(torch.load without arguments) fails on such files (checkpoint/detection_checkpoint.py:88);
falling back to full unpickling silently would let a downloaded checkpoint run code.

Also: ``DetectionCheckpointer.load`` understands the ``?matching_heuristics=True`` suffix of
newer detectron2 (used by upstream ViTDet configs for MAE weights: load a checkpoint whose keys
lack the model's prefixes, e.g. ``blocks.0...`` into ``backbone.net.blocks.0...``).
Why: detectron2 0.6 treats the suffix as part of the file name ("Checkpoint ... not found").
detectron2 main parses it itself (found by its checkpointer's ``_parsed_url_during_load``): then
only the safe loading applies.
When it can go: when fvcore/detectron2 load with ``weights_only`` and an allow-list themselves
and detectron2 is >= 0.7.
"""

from urllib.parse import parse_qs, urlparse
import argparse
import logging
import os
import pickle
import re

import numpy as np
import torch

__all__ = [
    "UNSAFE_LOAD_ENV",
    "UnsafeCheckpointError",
    "allow_unsafe_load",
    "load_checkpoint",
    "safe_globals",
    "unsafe_load_allowed",
]

UNSAFE_LOAD_ENV = "FPT_UNSAFE_LOAD"
_TRUE = ("1", "true", "yes", "on")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects outside the allow-list: unpickling it could run code."""


def allow_unsafe_load(enabled=True):
    """Let :func:`load_checkpoint` fully unpickle files that hold objects outside the allow-list
    (only for files you trust). Sets ``FPT_UNSAFE_LOAD``, so that processes started afterwards
    (multi-process training workers) inherit the choice; ``enabled=False`` clears it."""
    if enabled:
        os.environ[UNSAFE_LOAD_ENV] = "1"
    else:
        os.environ.pop(UNSAFE_LOAD_ENV, None)


def unsafe_load_allowed():
    return os.environ.get(UNSAFE_LOAD_ENV, "").strip().lower() in _TRUE


def safe_globals():
    """The allow-list given to ``torch.serialization.safe_globals`` (beyond torch's defaults)."""
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray
    allowed = [
        argparse.Namespace,  # MAE, DETR, timm: the training script's args
        torch.torch_version.TorchVersion,  # a saved torch.__version__ (a str)
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        # the same functions in files written with numpy 1 (numpy.core, now numpy._core)
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]
    # each dtype's class (state is set on it when unpickled); not ObjectDType: arbitrary objects
    allowed += list(
        dict.fromkeys(
            cls
            for name, cls in vars(getattr(np, "dtypes", object)).items()  # numpy >= 1.25
            if name.endswith("DType") and isinstance(cls, type) and name != "ObjectDType"
        )
    )
    return allowed


def _offending_globals(f, error):
    """Names of the globals in ``f`` that neither torch nor :func:`safe_globals` allow."""
    try:
        f.seek(0)
        with torch.serialization.safe_globals(safe_globals()):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # e.g. the legacy (non-zip) format: read them from torch's message
        names = []
    return sorted(set(names or re.findall(r"GLOBAL ([\w.]+)", str(error))))


def load_checkpoint(path):
    """``torch.load`` a file on CPU with ``weights_only=True`` and :func:`safe_globals`.

    Raises :class:`UnsafeCheckpointError` (one line) when the file holds anything else, unless
    :func:`unsafe_load_allowed`: then it is fully unpickled, with one logged line."""
    with open(path, "rb") as f:
        try:
            with torch.serialization.safe_globals(safe_globals()):
                return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            names = _offending_globals(f, e)
            if not unsafe_load_allowed():
                if not names:  # not an allow-list matter (a damaged file, ...): torch's error
                    raise
                raise UnsafeCheckpointError(
                    f"{path} holds {', '.join(names)}: not on fpt's allow-list of checkpoint "
                    "contents, and unpickling it could run code. Only if you trust the file, "
                    f"load it with --unsafe-load ({UNSAFE_LOAD_ENV}=1, or "
                    "fpt.compat.checkpoint.allow_unsafe_load())."
                ) from None
            logging.getLogger("fpt").warning(
                "%s holds %s: fully unpickling it, as %s asks (only for files you trust).",
                path,
                ", ".join(names) or "objects torch refuses",
                UNSAFE_LOAD_ENV,
            )
            f.seek(0)
            return torch.load(f, map_location="cpu", weights_only=False)


load_trusted = load_checkpoint  # the former name (fpt.checkpoint.vit_weights, tools/)


def _split_query(path):
    """``"x.pth?matching_heuristics=True"`` -> ``("x.pth", True)``."""
    parsed = urlparse(path)
    if not parsed.query:
        return path, False
    heuristics = parse_qs(parsed.query).get("matching_heuristics", ["False"])[0] == "True"
    return parsed._replace(query="").geturl(), heuristics


def _understands_queries(checkpointer_class):
    """Whether ``DetectionCheckpointer.load`` parses a ``?...`` query itself (main keeps the
    parsed URL in ``_parsed_url_during_load``, set by its constructor)."""
    return hasattr(checkpointer_class(torch.nn.Module()), "_parsed_url_during_load")


def apply():
    from detectron2.checkpoint import DetectionCheckpointer
    from fvcore.common.checkpoint import Checkpointer

    def _load_file(self, f):
        return load_checkpoint(f)

    Checkpointer._load_file = _load_file
    if _understands_queries(DetectionCheckpointer):
        return

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
