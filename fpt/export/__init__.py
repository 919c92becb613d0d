"""Exporting our models to TorchScript and ONNX, and running the exported files.

* :func:`export_model` (``tools/export_model.py``): a config's model -> ``model.ts`` or
  ``model.onnx`` + ``export.json``, checked against the eager model at a second image size;
* :func:`load_exported` (``demo/demo.py --exported``): a predictor running such a file, giving
  detectron2 ``Instances`` (or ``sem_seg``) in original image coordinates;
* :func:`evaluate_exported` (``tools/export_model.py --run-eval``): COCO (or the config's)
  evaluation of the exported and the eager model on the config's test set.

``onnx`` and ``onnxruntime`` are imported only when an ONNX file is written or run.
"""

from .compare import TOLERANCE, compare_predictions, describe_tolerance
from .evaluate import evaluate_exported
from .exporter import ExportResult, default_sample_image, export_model, second_image
from .families import (
    FORMATS,
    METHODS,
    SUPPORT,
    ExportError,
    Family,
    UnsupportedExport,
    check_supported,
    detect_family,
    support_table,
)
from .runner import ExportedModel, ExportedPredictor, load_exported, read_info

__all__ = [
    "FORMATS",
    "METHODS",
    "SUPPORT",
    "TOLERANCE",
    "ExportError",
    "ExportResult",
    "ExportedModel",
    "ExportedPredictor",
    "Family",
    "UnsupportedExport",
    "check_supported",
    "compare_predictions",
    "default_sample_image",
    "describe_tolerance",
    "detect_family",
    "evaluate_exported",
    "export_model",
    "load_exported",
    "read_info",
    "second_image",
    "support_table",
]
