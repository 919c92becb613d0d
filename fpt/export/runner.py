"""Running an exported model: :func:`load_exported` gives a :class:`fpt.predictor.Predictor`
whose model is the exported file.

An export directory holds the model file (``model.ts`` or ``model.onnx``) and ``export.json``,
everything needed to run it: the input channel order, the test-time resize, the class names and
dataset category ids, what the graph returns and how to post-process it. Inputs are prepared as
the eager predictor prepares them and outputs are post-processed with detectron2's own
functions, so the results are the eager model's (within :data:`fpt.export.compare.TOLERANCE`).
"""

import importlib
import inspect
import json
import os

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.data.catalog import Metadata
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import Boxes, Instances

from ..predictor import Predictor, pick_device
from .families import ExportError
from .onnx_export import onnx_session, torch_deprecations

__all__ = [
    "INFO_FILE",
    "ExportedModel",
    "ExportedPredictor",
    "load_exported",
    "read_info",
    "augmentations_to_json",
    "augmentations_from_json",
    "metadata_to_json",
    "metadata_from_json",
]

INFO_FILE = "export.json"
INFO_VERSION = 1
# metadata fields written to export.json (the ones drawing and COCO results use)
_METADATA_KEYS = (
    "thing_classes",
    "thing_colors",
    "thing_dataset_id_to_contiguous_id",
    "stuff_classes",
    "stuff_colors",
    "stuff_dataset_id_to_contiguous_id",
    "ignore_label",
    "evaluator_type",
)
# modules whose augmentations export.json may name (nothing else is imported from a file)
_AUGMENTATION_MODULES = ("detectron2.data.transforms", "fpt.")


def read_info(path):
    """(export directory, export.json as a dict) of an export directory or a file in it."""
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    info_path = os.path.join(directory, INFO_FILE)
    if not os.path.isfile(info_path):
        raise ExportError(
            f"{path}: not an export of tools/export_model.py (no {INFO_FILE} beside the model)"
        )
    try:
        with open(info_path) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"{info_path}: cannot read ({e})") from None
    if info.get("version") != INFO_VERSION:
        raise ExportError(
            f"{info_path}: export format version {info.get('version')!r}, this fpt reads "
            f"{INFO_VERSION}; export the model again"
        )
    return directory, info


# ---- export.json parts ----------------------------------------------------------------------
def augmentations_to_json(augmentations):
    """The test-time augmentations as ``[{"type": "module.Class", "args": {...}}]``; raises
    :class:`ExportError` for one that does not survive the round trip."""
    entries = []
    for aug in getattr(augmentations, "augs", augmentations):
        cls = type(aug)
        entry = {"type": f"{cls.__module__}.{cls.__qualname__}", "args": _init_args(aug)}
        if _init_args(augmentations_from_json([entry])[0]) != entry["args"]:
            raise ExportError(
                f"the test-time augmentation {aug!r} cannot be written to {INFO_FILE}"
            )
        entries.append(entry)
    return entries


def _init_args(aug):
    """The constructor arguments of an augmentation (detectron2 keeps them as attributes)."""
    params = inspect.signature(type(aug).__init__).parameters.values()
    return {
        p.name: _plain(getattr(aug, p.name))
        for p in params
        if p.name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and hasattr(aug, p.name)
    }


def augmentations_from_json(entries):
    augs = []
    for entry in entries:
        module_name, _, name = entry["type"].rpartition(".")
        if not module_name.startswith(_AUGMENTATION_MODULES):
            raise ExportError(f"{INFO_FILE}: augmentation {entry['type']} is not allowed")
        try:
            cls = getattr(importlib.import_module(module_name), name)
            augs.append(cls(**{k: _tuples(v) for k, v in entry["args"].items()}))
        except (ImportError, AttributeError, TypeError, ValueError) as e:
            raise ExportError(f"{INFO_FILE}: cannot build {entry['type']} ({e})") from None
    return augs


def _tuples(value):
    """JSON lists back to the tuples augmentations keep (their repr compares equal then)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise ExportError(f"cannot write {value!r} ({type(value).__name__}) to {INFO_FILE}")


def metadata_to_json(metadata):
    out = {"name": getattr(metadata, "name", "unknown")}
    for key in _METADATA_KEYS:
        value = metadata.get(key, None)
        if value is None:
            continue
        if isinstance(value, dict):  # json keys are strings: stored as pairs
            value = [[_plain(k), _plain(v)] for k, v in value.items()]
        else:
            value = _plain(value)
        out[key] = value
    return out


def metadata_from_json(entry):
    entry = dict(entry)
    for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id"):
        if key in entry:
            entry[key] = {k: v for k, v in entry[key]}
    for key in ("thing_colors", "stuff_colors"):
        if key in entry:
            entry[key] = [tuple(c) for c in entry[key]]
    return Metadata(**entry)


# ---- running ----------------------------------------------------------------------------------
class ExportedModel:
    """An exported file behind detectron2's model interface: called with a list of
    ``{"image": (3, h, w) tensor (resized, model channel order), "height", "width"}``, returns
    ``[{"instances": Instances}]`` or ``[{"sem_seg": (K, height, width)}]`` in original image
    coordinates, as the eager model does (so ``inference_on_dataset`` runs it too)."""

    def __init__(self, path, device=None, onnx_threads=None):
        """
        Args:
            path (str): an export directory, or its model file.
            device (str or None): where to run; default the device it was exported on when
                available, else cpu. A traced TorchScript file runs on that device only.
            onnx_threads (int or None): ONNX Runtime's intra-op threads (default: its own).
        """
        self.directory, self.info = read_info(path)
        if not os.path.isdir(path) and os.path.basename(path) != self.info["model_file"]:
            raise ExportError(
                f"{path}: {INFO_FILE} beside it describes {self.info['model_file']}, not this file "
                "(a file left from another export?)"
            )
        exported_on = self.info["device"]
        self.device = pick_device(device, exported_on)
        self.model_path = os.path.join(self.directory, self.info["model_file"])
        if not os.path.isfile(self.model_path):
            raise ExportError(f"{self.model_path}: the exported model file is missing")
        self.format = self.info["format"]
        self.output_names = list(self.info["outputs"])
        self.postprocess = self.info["postprocess"]
        max_size = self.info["input"].get("max_size")
        self.max_size = tuple(max_size) if max_size else None
        if self.format == "torchscript":
            if (
                self.info["export_method"] == "tracing"
                and torch.device(exported_on).type != self.device.type
            ):
                raise ExportError(
                    f"{self.model_path} was traced on {exported_on} and runs there only; "
                    f"export again with --device {self.device.type} to run on {self.device}"
                )
            with torch_deprecations():
                self.module = torch.jit.load(self.model_path, map_location=self.device)
            self._run = self._run_torchscript
        elif self.format == "onnx":
            self.session = onnx_session(self.model_path, self.device, onnx_threads)
            self._run = self._run_onnx
        else:
            raise ExportError(f"{INFO_FILE}: unknown format {self.format!r}")

    def _run_torchscript(self, image):
        outputs = self.module(image.to(self.device))
        if isinstance(outputs, dict):  # scripted: fields by name
            return {name: outputs[name] for name in self.output_names}
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return dict(zip(self.output_names, outputs))

    def _run_onnx(self, image):
        array = image.detach().to("cpu", torch.float32).numpy()
        outputs = self.session.run(self.output_names, {"image": array})
        return {
            name: torch.from_numpy(np.asarray(v)) for name, v in zip(self.output_names, outputs)
        }

    def check_input(self, image):
        """Raise one line when ``image`` (3, h, w) is larger than the exported model takes
        (ViTDet: its square padding; the traced backbone has that one size)."""
        if self.max_size and (
            image.shape[-2] > self.max_size[0] or image.shape[-1] > self.max_size[1]
        ):
            raise ExportError(
                f"this exported model takes inputs up to {self.max_size[0]}x{self.max_size[1]} "
                f"(after the test resize), got {image.shape[-2]}x{image.shape[-1]}"
            )

    @torch.no_grad()
    def __call__(self, batched_inputs):
        results = []
        for inputs in batched_inputs:
            image = inputs["image"]
            self.check_input(image)
            raw = self._run(image.float())
            size = tuple(image.shape[-2:])
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            results.append(self._postprocess(raw, size, height, width))
        return results

    def _postprocess(self, raw, size, height, width):
        if self.postprocess == "sem_seg":
            return {"sem_seg": sem_seg_postprocess(raw["sem_seg"], size, height, width)}
        if self.postprocess == "detr":  # as DETR.inference: normalized boxes to the original size
            scale = torch.as_tensor(
                [width, height, width, height],
                dtype=raw["pred_boxes"].dtype,
                device=raw["pred_boxes"].device,
            )
            boxes = Boxes(raw["pred_boxes"] * scale)
            boxes.clip((height, width))
            instances = Instances(
                (height, width),
                pred_boxes=boxes,
                scores=raw["scores"],
                pred_classes=raw["pred_classes"],
            )
            return {"instances": instances}
        fields = {
            "pred_boxes": Boxes(raw["pred_boxes"]),
            "scores": raw["scores"],
            "pred_classes": raw["pred_classes"],
        }
        if "pred_masks" in raw:
            fields["pred_masks"] = raw["pred_masks"]
        return {"instances": detector_postprocess(Instances(size, **fields), height, width)}


class ExportedPredictor(Predictor):
    """:class:`fpt.predictor.Predictor` (same ``predict``, ``preprocess``, score filtering,
    ``metadata``) running an exported model: the config is replaced by ``export.json``."""

    def __init__(self, path, device=None, batch_size=1, score_threshold=None, image_format="BGR"):
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = ExportedModel(path, device)
        info = self.model.info
        self.cfg = None
        self.batch_size = batch_size
        self.image_format = image_format
        self.score_threshold = score_threshold
        self.device = self.model.device
        self.input_format = info["input"]["format"]
        self.augmentations = T.AugmentationList(augmentations_from_json(info["test_resize"]))
        self.metadata = metadata_from_json(info["metadata"])
        self.weights = self.model.model_path
        self.info = info


def load_exported(path, device=None, batch_size=1, score_threshold=None, image_format="BGR"):
    """A predictor running an exported model (see :class:`ExportedPredictor`)::

        predictor = load_exported("exported/")       # or "exported/model.onnx"
        outputs = predictor(cv2.imread("a.jpg"))     # {"instances": Instances} or {"sem_seg": ...}

    Args:
        path (str): the export directory written by ``tools/export_model.py``, or its model file.
        device, batch_size, score_threshold, image_format: as :class:`fpt.predictor.Predictor`.
    """
    return ExportedPredictor(path, device, batch_size, score_threshold, image_format)
