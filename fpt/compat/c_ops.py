"""Stand-ins for detectron2's compiled ops (``detectron2._C``), absent from the registry sdist.

What: when detectron2 has no working compiled ops, register a Python module as ``detectron2._C``:
- deformable convolution (``DeformConv``, ``ModulatedDeformConv``) runs through
  ``torchvision.ops.deform_conv2d`` on every device, forward and backward (detectron2 0.6 itself
  has no CPU backward and no CPU modulated deform conv);
- the fast COCO evaluation is provided by :mod:`fpt.compat.fast_eval`;
- ``collect_env`` reports "not compiled" instead of calling ``_C.get_compiler_version``;
- rotated-box ops (IoU, NMS, batched NMS, ROIAlignRotated) have no library equivalent here: each
  raises :class:`MissingCompiledOp`, one line naming the feature. Rotated NMS is registered as the
  operator ``torch.ops.detectron2.nms_rotated`` that detectron2 calls, so ``nms_rotated``,
  ``batched_nms_rotated`` and RRPN reach the same error.
"Compiled ops present" means: ``detectron2._C`` imports and has every op detectron2 calls. A
``_C`` that is there but does not load (built against another torch: "undefined symbol") or
lacks ops is reported in one logged line and replaced, instead of failing every import.
Why: detectron2/layers/deform_conv.py, layers/rotated_boxes.py, layers/roi_align_rotated.py and
evaluation/fast_eval_api.py do ``from detectron2 import _C`` at import time, so without it
``detectron2.modeling`` and ``detectron2.evaluation`` do not import at all.
When it can go: never for the Python-only install; with a compiled detectron2 it steps aside.
"""

import importlib
import logging
import sys
import types

import torch
from torchvision.ops import deform_conv2d

_MODULE = "detectron2._C"
# what detectron2 0.6 calls on its compiled module (layers/, evaluation/, utils/collect_env.py)
_C_FUNCTIONS = (
    "box_iou_rotated",
    "roi_align_rotated_forward",
    "roi_align_rotated_backward",
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
    "InstanceAnnotation",
    "COCOevalEvaluateImages",
    "COCOevalAccumulate",
    "get_compiler_version",
    "get_cuda_version",
)
_verdict = None  # (has compiled ops, why not) once decided


def _check_compiled():
    try:
        module = importlib.import_module(_MODULE)
    except ModuleNotFoundError as e:
        if e.name in (_MODULE, "detectron2"):  # the Python-only install: nothing to report
            return False, None
        return False, f"detectron2._C does not load ({e})"
    except ImportError as e:  # e.g. built against another torch: "undefined symbol ..."
        return False, "detectron2._C does not load ({})".format(str(e).splitlines()[0][:200])
    missing = [name for name in _C_FUNCTIONS if not hasattr(module, name)]
    if not hasattr(torch.ops.detectron2, "nms_rotated"):
        missing.append("torch.ops.detectron2.nms_rotated")
    if missing:
        return False, "detectron2._C lacks " + ", ".join(missing)
    return True, None


def has_compiled_ops():
    """True when ``detectron2._C`` imports and has every compiled op detectron2 0.6 calls."""
    global _verdict
    if getattr(sys.modules.get(_MODULE), "__fpt_stand_in__", False):
        return False
    if _verdict is None:
        _verdict = _check_compiled()
        if _verdict[1]:
            logging.getLogger("fpt").warning(
                "%s: using fpt's Python stand-ins for detectron2's compiled ops instead "
                "(rebuild detectron2 against this torch to use its own).",
                _verdict[1],
            )
    return _verdict[0]


class MissingCompiledOp(NotImplementedError):
    pass


def _missing(feature):
    def op(*args, **kwargs):
        raise MissingCompiledOp(
            f"{feature} needs detectron2's compiled ops (detectron2._C), which this install does "
            "not have (Python-only, or built for another torch); build detectron2 from source "
            "against this torch to use it."
        )

    op.__name__ = feature
    return op


def _deform_conv(
    x,
    offset,
    weight,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    deformable_groups=1,
    im2col_step=64,
):
    """detectron2's ``deform_conv`` signature on torchvision (groups and deformable groups are
    read from the weight and offset shapes)."""
    return deform_conv2d(x, offset, weight, stride=stride, padding=padding, dilation=dilation)


def _modulated_deform_conv(
    x,
    offset,
    mask,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    deformable_groups=1,
):
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


_LIBRARY = None  # keeps the torch.library registration alive


def _register_rotated_nms():
    """``nms_rotated`` calls the operator ``torch.ops.detectron2.nms_rotated`` (layers/nms.py:96),
    which only the compiled ``_C`` registers: register one that raises the clear error."""
    global _LIBRARY
    if _LIBRARY is not None or hasattr(torch.ops.detectron2, "nms_rotated"):
        return
    _LIBRARY = torch.library.Library("detectron2", "DEF")
    _LIBRARY.define("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.impl("nms_rotated", _missing("Rotated NMS (nms_rotated)"), "CompositeExplicitAutograd")


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
