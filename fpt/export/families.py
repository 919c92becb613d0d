"""Which models can be exported how: the model families we ship and their support matrix.

A family is recognised from the built model (meta-architecture, backbone, heads), never from the
config's file name. :func:`check_supported` refuses an unsupported (format, method) pair with
one line that names what works, before anything is written.
"""

from dataclasses import dataclass

from ..config import ConfigError

__all__ = [
    "FORMATS",
    "METHODS",
    "ExportError",
    "UnsupportedExport",
    "Family",
    "SUPPORT",
    "detect_family",
    "check_supported",
    "support_table",
]

FORMATS = ("torchscript", "onnx")
METHODS = ("tracing", "scripting")
TRACING = (("torchscript", "tracing"), ("onnx", "tracing"))
ALL_TORCHSCRIPT = TRACING + (("torchscript", "scripting"),)


class ExportError(ConfigError):
    """An export that cannot be made, loaded or trusted; the message is one line."""


class UnsupportedExport(ExportError):
    """A (model family, format, method) combination that is not supported; one line that names
    the combination that works."""


@dataclass(frozen=True)
class Family:
    """A model family: ``key`` (stable id, in the JSON), ``name`` (for messages), ``outputs``
    (what the exported graph returns: "instances", "detr" or "sem_seg")."""

    key: str
    name: str
    outputs: str


# family key -> (supported (format, method) pairs, why scripting does not work)
SUPPORT = {
    "rcnn": (ALL_TORCHSCRIPT, None),
    "cascade_rcnn": (
        TRACING,
        "detectron2 0.6's CascadeROIHeads does not compile with TorchScript",
    ),
    "vitdet": (
        TRACING,
        "fpt's ViT (tuple unpacking of tensors, optional modules) does not compile",
    ),
    "fpt": (TRACING, "the FPT neck (lists of modules, generator expressions) does not compile"),
    "semantic_fpt": (TRACING, "the FPT neck does not compile with TorchScript"),
    "detr": (TRACING, "DETR's attention (nested functions) does not compile with TorchScript"),
    "detr_irpe": (TRACING, "DETR's attention (nested functions) does not compile with TorchScript"),
    "rcnn_other": (TRACING, "only detectron2's own ResNet/FPN backbones are scriptable"),
}

_NAMES = {
    "rcnn": "R-CNN with a ResNet-FPN backbone",
    "cascade_rcnn": "Cascade R-CNN",
    "vitdet": "ViTDet (ViT + Simple Feature Pyramid) R-CNN",
    "fpt": "FPT R-CNN",
    "semantic_fpt": "the semantic FPT model",
    "detr": "DETR",
    "detr_irpe": "DETR with iRPE",
    "rcnn_other": "R-CNN with another backbone",
}


def _family(key, outputs="instances"):
    return Family(key, _NAMES[key], outputs)


def detect_family(model):
    """The :class:`Family` of a built model.

    Raises:
        UnsupportedExport: a model outside the families we export (e.g. RetinaNet, panoptic
            FPN, keypoint heads), in one line.
    """
    from detectron2.modeling import GeneralizedRCNN, SemanticSegmentor
    from detectron2.modeling.backbone import FPN, ResNet
    from detectron2.modeling.roi_heads import CascadeROIHeads

    from ..modeling import FPT, SimpleFeaturePyramid
    from ..modeling.detr import DETR

    kind = type(model).__name__
    if isinstance(model, DETR):
        return _family("detr_irpe" if model.transformer.enc_rpe is not None else "detr", "detr")
    if isinstance(model, SemanticSegmentor) and type(model) is SemanticSegmentor:
        if isinstance(model.backbone, FPT):
            return _family("semantic_fpt", "sem_seg")
        raise UnsupportedExport(
            f"export supports the semantic FPT model; this SemanticSegmentor has a "
            f"{type(model.backbone).__name__} backbone"
        )
    if isinstance(model, GeneralizedRCNN) and type(model) is GeneralizedRCNN:
        heads = model.roi_heads
        if getattr(heads, "keypoint_on", False):
            raise UnsupportedExport(
                "export does not support keypoint heads (the exported graph would drop the "
                "keypoints); supported: boxes, classes, scores and masks"
            )
        if model.proposal_generator is None:
            raise UnsupportedExport("export needs an R-CNN with its RPN (precomputed proposals)")
        backbone = model.backbone
        if isinstance(backbone, SimpleFeaturePyramid):
            return _family("vitdet")
        if isinstance(backbone, FPT):
            return _family("fpt")
        if isinstance(heads, CascadeROIHeads):
            return _family("cascade_rcnn")
        if isinstance(backbone, (FPN, ResNet)) and _detectron2_only(backbone):
            return _family("rcnn")
        return _family("rcnn_other")
    raise UnsupportedExport(
        f"export supports R-CNN (ResNet-FPN, ViTDet, FPT backbones, Cascade), the semantic FPT "
        f"model and DETR; this config builds {kind}"
    )


def _detectron2_only(module):
    return all(type(m).__module__.startswith(("detectron2.", "torch.")) for m in module.modules())


def check_supported(family, fmt, method):
    """Raise :class:`UnsupportedExport` (one line, naming what works) unless ``family`` can be
    exported to ``fmt`` by ``method``; ``family=None`` checks what holds for every family."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is unknown; allowed: {', '.join(FORMATS)}")
    if method not in METHODS:
        raise ExportError(f"--export-method {method!r} is unknown; allowed: {', '.join(METHODS)}")
    if fmt == "onnx" and method == "scripting":
        raise UnsupportedExport(
            "ONNX export records the model by tracing (torch.onnx.export of a scripted detector "
            "is not supported): use --format onnx --export-method tracing"
        )
    if family is None:
        return
    supported, why_not_scripting = SUPPORT[family.key]
    if (fmt, method) in supported:
        return
    raise UnsupportedExport(
        f"{fmt} export by {method} is not supported for {family.name}: {why_not_scripting}; "
        f"use --export-method tracing (--format torchscript or onnx)"
    )


def support_table():
    """The support matrix as rows ``(family name, {(format, method): bool})``, for the README
    and ``tools/export_model.py --list``."""
    rows = []
    for key, (supported, _) in SUPPORT.items():
        rows.append((_NAMES[key], {(f, m): (f, m) in supported for f in FORMATS for m in METHODS}))
    return rows
