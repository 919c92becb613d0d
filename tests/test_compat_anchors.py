"""fpt.compat.anchors: anchor generators, RPN, RetinaNet and Mask R-CNN script and trace.

A model traced at one image size must give the eager results at another (the grid sizes must
stay traced values), and ``torch.jit.script`` must compile the anchor code.
"""

import contextlib
import os
import re
import warnings

import torch
import torchvision
from torch import Tensor

import detectron2
import fpt  # noqa: F401
from detectron2 import model_zoo
from detectron2.export import TracingAdapter, scripting_with_instances
from detectron2.modeling import build_model
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, ImageList

# where the TracerWarnings we accept come from (not fpt: the old shim's len() was one)
LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (detectron2, torchvision, torch)
)
JIT_DEPRECATED = r"`torch\.jit\.(script|trace|trace_method)` is deprecated"


@contextlib.contextmanager
def jit_warnings_checked():
    """Run scripting/tracing with warnings recorded, then check them.

    Allowed, and only inside this block: torch's own deprecation of ``torch.jit.script/trace``
    (the API under test), and ``TracerWarning``s raised by detectron2/torchvision/torch code
    (detectron2 0.6's asserts and shape checks, e.g. ``assert boxes.dim() == 2``; they are
    constant-folded checks that do not change the traced computation: the second-size checks
    below prove it). Any other warning, and any from fpt's own code (the old shim's
    ``len(shifts_y)`` was one), fails.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    bad = []
    for w in caught:
        text = str(w.message)
        deprecation = (FutureWarning, DeprecationWarning)  # torch >= 2.14, torch 2.10-2.13
        if issubclass(w.category, deprecation) and re.search(JIT_DEPRECATED, text):
            continue
        in_library = os.path.abspath(w.filename).startswith(LIBRARY_DIRS)
        if issubclass(w.category, torch.jit.TracerWarning) and in_library:
            continue
        bad.append(f"{w.filename}:{w.lineno}: {w.category.__name__}: {text[:200]}")
    assert not bad, "\n".join(bad)


def _tiny_model(config_file):
    """A model-zoo config made tiny (ResNet-18-FPN, 32 channels), random weights, eval mode."""
    cfg = model_zoo.get_config(config_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]  # random weights: keep activations moderate
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep detections to compare
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    torch.manual_seed(0)
    return build_model(cfg).eval()


SIZES = [(96, 128), (160, 96)]  # traced at the first, checked at the second


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=g) * 255 for h, w in SIZES]


def _preprocess(model, inputs):
    images = [(x["image"] - model.pixel_mean) / model.pixel_std for x in inputs]
    return ImageList.from_tensors(images, model.backbone.size_divisibility)


def _rpn_proposals(model, inputs):
    images = _preprocess(model, inputs)
    features = model.backbone(images.tensor)
    return model.proposal_generator(images, features, None)[0]


def _rcnn_detections(model, inputs):
    return model.inference(inputs, do_postprocess=False)


def _dense_detections(model, inputs):
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    return model.forward_inference(images, features, model.head(features))


def _assert_same_instances(a, b, fields):
    assert len(a) == len(b) > 0
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, Boxes):
            x, y = x.tensor, y.tensor
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4, msg=name)


def _check_trace_at_second_size(model, run, fields):
    first, second = _images()
    with jit_warnings_checked():
        adapter = TracingAdapter(model, [{"image": first}], lambda m, inputs: run(m, inputs))
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    with torch.no_grad():
        for image in (first, second):
            expected = run(model, [{"image": image}])
            got = adapter.outputs_schema(traced(image))
            _assert_same_instances(expected[0], got[0], fields)


def test_default_anchor_generator_centred_and_scripted():
    generator = DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[4], offset=0.5)
    features = [torch.zeros(2, 8, 2, 3)]
    expected = torch.tensor(
        [
            [cx - 16.0, cy - 16.0, cx + 16.0, cy + 16.0]
            for cy in (2.0, 6.0)
            for cx in (2.0, 6.0, 10.0)
        ]
    )
    torch.testing.assert_close(generator(features)[0].tensor, expected)
    with jit_warnings_checked():
        scripted = torch.jit.script(generator)
    torch.testing.assert_close(scripted(features)[0].tensor, expected)
    # offset 0 (detectron2's default for Faster R-CNN configs): the grid starts at 0
    corner = DefaultAnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[4], offset=0.0)
    torch.testing.assert_close(corner(features)[0].tensor, expected - 2.0)


def test_rpn_scripts_and_traces_at_another_size():
    model = _tiny_model("COCO-Detection/rpn_R_50_FPN_1x.yaml")
    fields = {"proposal_boxes": Boxes, "objectness_logits": Tensor}
    with jit_warnings_checked():
        scripted = scripting_with_instances(model.proposal_generator, fields)
    for image in _images():
        images = _preprocess(model, [{"image": image}])
        with torch.no_grad():
            features = model.backbone(images.tensor)
            expected = model.proposal_generator(images, features)[0][0]
            got = scripted(images, features)[0][0]
        assert len(expected) == 50
        _assert_same_instances(expected, got, fields)
    _check_trace_at_second_size(model, _rpn_proposals, fields)


def test_retinanet_scripts_and_traces_at_another_size():
    model = _tiny_model("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    fields = {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}
    with jit_warnings_checked():
        scripted = scripting_with_instances(model, fields)
    for image in _images():
        with torch.no_grad():
            expected = _dense_detections(model, [{"image": image}])[0]
            got = scripted([{"image": image}])[0]
        _assert_same_instances(expected, got, fields)
    _check_trace_at_second_size(model, _dense_detections, fields)


def test_mask_rcnn_scripts_and_traces_at_another_size():
    model = _tiny_model("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    fields = {
        "proposal_boxes": Boxes,
        "objectness_logits": Tensor,
        "pred_boxes": Boxes,
        "scores": Tensor,
        "pred_classes": Tensor,
        "pred_masks": Tensor,
    }
    outputs = ("pred_boxes", "scores", "pred_classes", "pred_masks")
    with jit_warnings_checked():
        scripted = scripting_with_instances(model, fields)
    for image in _images():
        with torch.no_grad():
            expected = _rcnn_detections(model, [{"image": image}])[0]
            got = scripted.inference([{"image": image}], do_postprocess=False)[0]
        _assert_same_instances(expected, got, outputs)
    _check_trace_at_second_size(model, _rcnn_detections, outputs)
