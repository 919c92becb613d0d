"""Exporting a config's model to TorchScript or ONNX, and checking the file before keeping it.

:func:`export_model` builds the model as :class:`fpt.predictor.Predictor` does (weights, test
resize, channel order, class names), exports the family's adapter (:mod:`fpt.export.adapters`),
writes ``export.json`` (:mod:`fpt.export.runner`), then reloads the written file and runs it on
the sample image and on a second image of another size and aspect ratio, comparing with the eager
model (:mod:`fpt.export.compare`). Files go to a temporary folder and are moved into the output
directory only when both agree: a model that would be wrong at other sizes is never left behind.
"""

import json
import logging
import os
import shutil
import tempfile
import time

import cv2
import torch

from ..config import RunConfig
from ..data.images import ImageReadError, read_image
from ..utils.text import first_line
from ..predictor import Predictor
from .adapters import make_adapter, output_axes, plain_attributes
from .compare import TOLERANCE, compare_predictions, describe_tolerance
from .families import SUPPORT, ExportError, UnsupportedExport, check_supported, detect_family
from .onnx_export import OPSET, export_onnx, torch_deprecations
from .runner import (
    INFO_FILE,
    INFO_VERSION,
    ExportedPredictor,
    augmentations_to_json,
    metadata_to_json,
)

__all__ = ["ExportResult", "export_model", "second_image", "default_sample_image"]

logger = logging.getLogger(__name__)

MODEL_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
POSTPROCESS = {"instances": "detector_postprocess", "detr": "detr", "sem_seg": "sem_seg"}


class ExportResult(dict):
    """What :func:`export_model` wrote: ``model_file``, ``info_file``, ``info`` (export.json's
    content, verification included), ``family``, ``seconds``."""

    def summary(self):
        info, check = self["info"], self["info"]["verification"]
        sizes = ", ".join(f"{h}x{w}" for h, w in check["image_sizes"])
        return (
            f"exported {self['family'].name} to {info['format']} by {info['export_method']}: "
            f"{self['model_file']} ({os.path.getsize(self['model_file']) / 2**20:.1f} MiB) + "
            f"{INFO_FILE}; matches the eager model on images of {sizes} "
            f"({_stats_line(check['stats'])})"
        )


def _stats_line(stats):
    parts = []
    for s in stats:
        if "instances" in s:
            part = (
                f"{s['instances']} instances, boxes within {s['max_box_px']:.2g} px, "
                f"scores within {s['max_score']:.2g}"
            )
            if "min_mask_iou" in s:
                part += f", mask IoU >= {s['min_mask_iou']:.3f}"
        else:
            part = f"logits within {s['max_sem_seg']:.2g}"
        parts.append(part)
    return "; ".join(parts)


def default_sample_image(cfg):
    """Path of the first image of the config's test set, or raise :class:`ExportError`."""
    from detectron2.data import DatasetCatalog

    names = RunConfig.of(cfg).test_dataset_names
    names = names[0] if names else None
    hint = "pass --sample-image IMG (an image like those the model will see)"
    if not names:
        raise ExportError(f"the config names no test dataset to take a sample image from: {hint}")
    try:
        dicts = DatasetCatalog.get(names)
    except Exception as e:  # a dataset's loader raises anything (missing files, bad json)
        raise ExportError(f"cannot read test dataset {names} ({first_line(e)}): {hint}") from None
    if not dicts:
        raise ExportError(f"test dataset {names} is empty: {hint}")
    return dicts[0]["file_name"]


def second_image(image):
    """The sample at another size and aspect ratio (0.6 of its height, 0.8 of its width), for
    the check that the export is not tied to the sample's size."""
    height, width = image.shape[:2]
    size = (max(1, round(0.8 * width)), max(1, round(0.6 * height)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def export_model(
    cfg,
    output_dir,
    format="torchscript",
    method="tracing",
    sample_image=None,
    device=None,
    config_file=None,
    check_images=None,
    predictor=None,
):
    """
    Export a config's model and check it.

    Args:
        cfg: a LazyConfig or yacs config (see :func:`fpt.config.load_config`), with the
            trained weights (``train.init_checkpoint`` / ``MODEL.WEIGHTS``).
        output_dir (str): where ``model.ts`` / ``model.onnx`` and ``export.json`` go.
        format (str): "torchscript" or "onnx".
        method (str): "tracing" or "scripting" (see :func:`fpt.export.families.check_supported`).
        sample_image (str, np.ndarray or None): an image file, or an ``(H, W, 3)`` uint8 RGB
            array; default: the first image of the config's test set.
        device (str or None): where to export (and where a traced file will run); default as
            :class:`fpt.predictor.Predictor`.
        config_file (str or None): recorded in ``export.json``.
        check_images (list[np.ndarray] or None): RGB images to check the export on; default the
            sample and :func:`second_image` of it.
        predictor (Predictor or None): the eager model, if already built from ``cfg`` (e.g. to
            export it to several formats); ``device`` is then its device.

    Returns:
        ExportResult.

    Raises:
        UnsupportedExport: the combination cannot be exported (one line naming what works).
        ExportError: the export failed, or the exported model disagrees with the eager model.
    """
    start = time.perf_counter()
    check_supported(None, format, method)
    if predictor is None:
        predictor = Predictor(cfg, device=device, image_format="RGB")
    elif predictor.image_format != "RGB":
        raise ValueError("export_model needs a Predictor with image_format='RGB'")
    model = predictor.model
    family = detect_family(model)
    check_supported(family, format, method)
    max_size = _max_input_size(family, model)

    if sample_image is None:
        sample_image = default_sample_image(cfg)
    if isinstance(sample_image, str):
        try:
            sample_image = read_image(sample_image, format="RGB")
        except ImageReadError as e:
            raise ExportError(f"sample image {e}") from None
    images = check_images or [sample_image, second_image(sample_image)]
    inputs = predictor.preprocess(sample_image)
    image = inputs["image"].to(predictor.device)
    if max_size and (image.shape[1] > max_size[0] or image.shape[2] > max_size[1]):
        raise ExportError(
            f"the sample image is {image.shape[1]}x{image.shape[2]} after the test resize, "
            f"larger than the model's square padding {max_size[0]}x{max_size[1]}"
        )

    plain_attributes(model)
    adapter, names = make_adapter(family, model, method)
    os.makedirs(output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=output_dir)
    try:
        model_file = os.path.join(staging, MODEL_FILES[format])
        _write_model(adapter, image, model_file, format, method, family, names)
        info = _info(cfg, predictor, family, format, method, names, max_size, config_file)
        _write_info(staging, info)
        info["verification"] = _verify(predictor, staging, images, family, format, method)
        _write_info(staging, info)
        final = {}
        # the model, export.json and any ONNX external-data files (models over 2 GB)
        for name in sorted(os.listdir(staging), key=lambda n: n == INFO_FILE):
            final[name] = os.path.join(output_dir, name)
            os.replace(os.path.join(staging, name), final[name])
        for name in set(MODEL_FILES.values()) - {MODEL_FILES[format]}:
            stale = os.path.join(output_dir, name)  # an earlier export's, no longer described
            if os.path.isfile(stale):
                os.remove(stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = ExportResult(
        model_file=final[MODEL_FILES[format]],
        info_file=final[INFO_FILE],
        info=info,
        family=family,
        seconds=time.perf_counter() - start,
    )
    logger.debug(result.summary())
    return result


def _max_input_size(family, model):
    """ViTDet: the square padding (every input is padded to it; the traced ViT has that one
    token grid). None for the other families, whose traced graphs follow the input size."""
    if family.key != "vitdet":
        return None
    square = model.backbone.padding_constraints.get("square_size", 0)
    if not square:
        raise UnsupportedExport(
            "ViTDet without square padding cannot be exported: the traced ViT keeps the sample's "
            "token grid (window padding, position-embedding resize); set "
            "model.backbone.square_pad (as ViTDet's configs: 1024)"
        )
    return (square, square)


def _write_model(adapter, image, path, format, method, family, names):
    try:
        if format == "onnx":
            export_onnx(adapter, image, path, names, output_axes(family, names))
            return
        with torch_deprecations(tracer_warnings=True):
            if method == "scripting":
                from detectron2.export import scripting_with_instances
                from detectron2.structures import Boxes

                fields = {
                    "proposal_boxes": Boxes,
                    "objectness_logits": torch.Tensor,
                    "pred_boxes": Boxes,
                    "scores": torch.Tensor,
                    "pred_classes": torch.Tensor,
                    "pred_masks": torch.Tensor,
                }
                module = scripting_with_instances(adapter, fields)
            else:
                module = torch.jit.trace(adapter, (image,), check_trace=False)
            torch.jit.save(module, path)
    except (ExportError, KeyboardInterrupt):
        raise
    except Exception as e:  # torch's tracer, scripting compiler and ONNX exporter raise anything
        raise ExportError(
            f"{format} export by {method} of {family.name} failed: {type(e).__name__}: "
            f"{first_line(e)}"
        ) from e


def _info(cfg, predictor, family, format, method, names, max_size, config_file):
    model = predictor.model
    mean = getattr(model, "pixel_mean", None)
    std = getattr(model, "pixel_std", None)
    return {
        "version": INFO_VERSION,
        "model_file": MODEL_FILES[format],
        "format": format,
        "export_method": method,
        "family": family.key,
        "family_name": family.name,
        "config_file": config_file,
        "weights": predictor.weights,
        "device": str(predictor.device),
        "input": {
            "name": "image",
            "layout": "(3, H, W) float32, 0-255, one image, after the test resize",
            "format": predictor.input_format,
            "normalization": "inside the model",
            "pixel_mean": None if mean is None else [round(float(v), 4) for v in mean.flatten()],
            "pixel_std": None if std is None else [round(float(v), 4) for v in std.flatten()],
            "size_divisibility": int(getattr(model.backbone, "size_divisibility", 0) or 0),
            "max_size": list(max_size) if max_size else None,
        },
        "test_resize": augmentations_to_json(predictor.augmentations),
        "outputs": list(names),
        "postprocess": POSTPROCESS[family.outputs],
        "metadata": metadata_to_json(predictor.metadata),
        "torch": torch.__version__,
        "onnx_opset": OPSET if format == "onnx" else None,
    }


def _write_info(directory, info):
    with open(os.path.join(directory, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


def _verify(predictor, directory, images, family, format, method):
    """Run the written file on ``images`` and compare with the eager model; raise
    :class:`ExportError` (one line) on the first disagreement."""
    exported = ExportedPredictor(directory, device=predictor.device, image_format="RGB")
    stats, sizes = [], []
    for image in images:
        size = f"{image.shape[0]}x{image.shape[1]}"
        expected = predictor(image)
        try:
            got = exported(image)
        except Exception as e:  # the exported graph fails at this size (e.g. a traced constant)
            problems = [f"it fails: {type(e).__name__}: {first_line(e)}"]
        else:
            problems, image_stats = compare_predictions(expected, got)
        if problems:
            raise ExportError(
                f"the {format} export by {method} of {family.name} does not match the eager "
                f"model on a {size} image ({problems[0]}); nothing was written. "
                + _what_works(family, format, method)
            )
        if image_stats.get("instances") == 0:
            logger.warning(
                f"the eager model finds nothing on the {size} check image: only empty outputs "
                "were compared; pass a --sample-image with objects in it"
            )
        stats.append(image_stats)
        sizes.append([int(image.shape[0]), int(image.shape[1])])
    return {
        "image_sizes": sizes,
        "stats": stats,
        "tolerance": dict(TOLERANCE),
        "tolerance_text": describe_tolerance(),
    }


def _what_works(family, format, method):
    others = [(f, m) for f, m in SUPPORT[family.key][0] if (f, m) != (format, method)]
    if not others:
        return "No other export of this model is supported."
    return (
        "Supported otherwise: "
        + ", ".join(f"--format {f} --export-method {m}" for f, m in others)
        + "."
    )
