"""Stand-ins for detectron2's compiled ops (``detectron2._C``), absent from the registry sdist.

What: when ``detectron2._C`` cannot be imported, register a Python module in its place:
- deformable convolution (``DeformConv``, ``ModulatedDeformConv``) runs through
  ``torchvision.ops.deform_conv2d`` on every device, forward and backward (detectron2 0.6 itself
  has no CPU backward and no CPU modulated deform conv);
- the fast COCO evaluation is provided by :mod:`fpt.compat.fast_eval`;
- ``collect_env`` reports "not compiled" instead of calling ``_C.get_compiler_version``;
- rotated-box ops (IoU, NMS, ROIAlignRotated) have no library equivalent here: calling them
  raises one clear error naming the feature.
Why: detectron2/layers/deform_conv.py, layers/rotated_boxes.py, layers/roi_align_rotated.py and
evaluation/fast_eval_api.py do ``from detectron2 import _C`` at import time, so without it
``detectron2.modeling`` and ``detectron2.evaluation`` do not import at all.
When it can go: never for the Python-only install; with a compiled detectron2 it steps aside.
"""
import importlib
import importlib.util
import sys
import types

import torch
from torchvision.ops import deform_conv2d

_MODULE = "detectron2._C"


def has_compiled_ops():
    """True when a real compiled ``detectron2._C`` is importable."""
    if getattr(sys.modules.get(_MODULE), "__fpt_stand_in__", False):
        return False
    try:
        return importlib.util.find_spec(_MODULE) is not None
    except ModuleNotFoundError:  # detectron2 itself missing
        return False


class MissingCompiledOp(NotImplementedError):
    pass


def _missing(feature):
    def op(*args, **kwargs):
        raise MissingCompiledOp(
            f"{feature} needs detectron2's compiled ops (detectron2._C), which this Python-only "
            "install does not have; build detectron2 from source to use it."
        )

    op.__name__ = feature
    return op


def _deform_conv(x, offset, weight, stride=1, padding=0, dilation=1, groups=1,
                 deformable_groups=1, im2col_step=64):
    """detectron2's ``deform_conv`` signature on torchvision (groups and deformable groups are
    read from the weight and offset shapes)."""
    return deform_conv2d(x, offset, weight, stride=stride, padding=padding, dilation=dilation)


def _modulated_deform_conv(x, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1,
                           groups=1, deformable_groups=1):
    """detectron2's ``modulated_deform_conv`` signature on torchvision (DCNv2: ``mask``)."""
    return deform_conv2d(
        x, offset, weight, bias=bias, stride=stride, padding=padding, dilation=dilation, mask=mask
    )


def _stand_in_module():
    mod = types.ModuleType(_MODULE, "fpt.compat stand-in for detectron2's compiled ops")
    mod.__fpt_stand_in__ = True
    mod.get_compiler_version = lambda: "not compiled (Python-only detectron2, fpt.compat)"
    mod.get_cuda_version = lambda: "not compiled"
    mod.has_cuda = lambda: False
    for name, feature in [
        ("box_iou_rotated", "Rotated box IoU (pairwise_iou_rotated)"),
        ("roi_align_rotated_forward", "ROIAlignRotated"),
        ("roi_align_rotated_backward", "ROIAlignRotated"),
        ("deform_conv_forward", "detectron2's CUDA deformable conv kernel"),
        ("deform_conv_backward_input", "detectron2's CUDA deformable conv kernel"),
        ("deform_conv_backward_filter", "detectron2's CUDA deformable conv kernel"),
        ("modulated_deform_conv_forward", "detectron2's CUDA deformable conv kernel"),
        ("modulated_deform_conv_backward", "detectron2's CUDA deformable conv kernel"),
        ("InstanceAnnotation", "detectron2's C++ COCO evaluation"),
        ("COCOevalEvaluateImages", "detectron2's C++ COCO evaluation"),
        ("COCOevalAccumulate", "detectron2's C++ COCO evaluation"),
    ]:
        setattr(mod, name, _missing(feature))
    return mod


def _register_rotated_nms():
    """``torch.ops.detectron2.nms_rotated`` is looked up at call time (layers/nms.py)."""
    if hasattr(torch.ops, "detectron2") and hasattr(torch.ops.detectron2, "nms_rotated"):
        return
    import detectron2.layers.nms as nms

    nms.nms_rotated = _missing("Rotated NMS (nms_rotated)")
    # batched_nms_rotated calls nms_rotated through the module global
    import detectron2.layers as layers

    layers.nms_rotated = nms.nms_rotated


def apply():
    if has_compiled_ops():
        return
    import detectron2

    stand_in = _stand_in_module()
    sys.modules[_MODULE] = stand_in
    detectron2._C = stand_in

    dc = importlib.import_module("detectron2.layers.deform_conv")
    dc.deform_conv = _deform_conv  # DeformConv.forward looks these names up at call time
    dc.modulated_deform_conv = _modulated_deform_conv
    _register_rotated_nms()
