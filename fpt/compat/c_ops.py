"""Stand-ins for detectron2's compiled ops (``detectron2._C``), absent from the registry sdist.

What: when detectron2 has no working compiled ops, register a Python module as ``detectron2._C``:
- deformable convolution (``DeformConv``, ``ModulatedDeformConv``) runs through
  ``torchvision.ops.deform_conv2d`` on every device, forward and backward;
- the fast COCO evaluation is provided by :mod:`fpt.compat.fast_eval`;
- ``collect_env`` reports "not compiled" instead of calling ``_C.get_compiler_version``;
- rotated-box ops (IoU, NMS, batched NMS, ROIAlignRotated) have no library equivalent here: each
  raises :class:`MissingCompiledOp`, one line naming the feature. They are also registered as the
  operators ``torch.ops.detectron2.<op>`` that detectron2 calls (0.6: ``nms_rotated``; main: all
  four), so ``nms_rotated``, ``batched_nms_rotated``, RRPN and ROIAlignRotated reach the same
  error.
"Compiled ops present" means: ``detectron2._C`` imports and has every op detectron2 calls, each
rotated op as a function of ``_C`` (0.6) or as a registered operator (main). A ``_C`` that is
there but does not load (built against another torch: "undefined symbol") or lacks ops is
reported in one logged line and replaced, instead of failing every import.
With compiled ops present, one gap remains: detectron2's deformable conv has no CPU backward and
no CPU modulated conv ("Deformable Conv is not supported on CPUs!", 0.6 and main alike, found by
running both on a 3x3 input at import): CPU inputs then go to torchvision, CUDA inputs keep
detectron2's kernels.
Why: detectron2/layers/deform_conv.py, layers/rotated_boxes.py, layers/roi_align_rotated.py and
evaluation/fast_eval_api.py do ``from detectron2 import _C`` at import time, so without it
``detectron2.modeling`` and ``detectron2.evaluation`` do not import at all.
When it can go: never for the Python-only install; with a compiled detectron2 it steps aside,
but for the CPU deformable conv route, which goes when detectron2's own trains on CPU.
"""

import importlib
import logging
import sys
import types

import torch
from torchvision.ops import deform_conv2d

_MODULE = "detectron2._C"
# what detectron2 calls as functions of its compiled module (layers/deform_conv.py,
# evaluation/fast_eval_api.py, utils/collect_env.py), in 0.6 and main alike
_C_FUNCTIONS = (
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
# the rotated-box ops: (feature named in the error, operator schema). detectron2 0.6 calls the
# first three as functions of ``_C`` and ``nms_rotated`` as the operator
# ``torch.ops.detectron2.nms_rotated``; detectron2 main calls all four as operators. An op is
# there when either form is (and the operator is not our stand-in).
_ROTATED_OPS = {
    "box_iou_rotated": (
        "Rotated box IoU (pairwise_iou_rotated)",
        "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    ),
    "roi_align_rotated_forward": (
        "ROIAlignRotated",
        "roi_align_rotated_forward(Tensor input, Tensor rois, float spatial_scale, "
        "int pooled_height, int pooled_width, int sampling_ratio) -> Tensor",
    ),
    "roi_align_rotated_backward": (
        "ROIAlignRotated",
        "roi_align_rotated_backward(Tensor grad, Tensor rois, float spatial_scale, "
        "int pooled_height, int pooled_width, int batch_size, int channels, int height, "
        "int width, int sampling_ratio) -> Tensor",
    ),
    "nms_rotated": (
        "Rotated NMS (nms_rotated)",
        "nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor",
    ),
}
_verdict = None  # (has compiled ops, why not) once decided
_LIBRARY = None  # our torch.library registrations (kept alive); None until the stand-ins apply
_STAND_IN_OPS = set()  # names of the operators registered by us


def _has_operator(name):
    return name not in _STAND_IN_OPS and hasattr(torch.ops.detectron2, name)


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
    missing += [name for name in _ROTATED_OPS if not (hasattr(module, name) or _has_operator(name))]
    if missing:
        return False, "detectron2._C lacks " + ", ".join(missing)
    return True, None


def has_compiled_ops():
    """True when ``detectron2._C`` imports and has every compiled op detectron2 calls."""
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
    deform = "detectron2's CUDA deformable conv kernel"
    functions = {name: deform for name in _C_FUNCTIONS if "deform_conv" in name}
    functions.update(
        dict.fromkeys(
            ("InstanceAnnotation", "COCOevalEvaluateImages", "COCOevalAccumulate"),
            "detectron2's C++ COCO evaluation",
        )
    )
    functions.update({name: feature for name, (feature, _) in _ROTATED_OPS.items()})
    for name, feature in functions.items():
        setattr(mod, name, _missing(feature))
    return mod


def _register_rotated_operators():
    """detectron2 calls the rotated ops as operators ``torch.ops.detectron2.<name>`` (0.6:
    ``nms_rotated``, layers/nms.py; main: all four), which only the compiled ``_C`` registers:
    register each missing one as an operator that raises the clear error."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("detectron2", "FRAGMENT")
    for name, (feature, schema) in _ROTATED_OPS.items():
        if hasattr(torch.ops.detectron2, name):
            continue
        _LIBRARY.define(schema)
        _LIBRARY.impl(name, _missing(feature), "CompositeExplicitAutograd")
        _STAND_IN_OPS.add(name)


def _cpu_deform_conv_trains(dc):
    """Whether detectron2's deformable convs (plain and modulated) run forward and backward on
    a CPU input."""
    x = torch.rand(1, 1, 3, 3, requires_grad=True)
    offset, mask, weight = torch.zeros(1, 18, 3, 3), torch.ones(1, 9, 3, 3), torch.ones(1, 1, 3, 3)
    try:
        dc.deform_conv(x, offset, weight, 1, 1, 1, 1, 1).sum().backward()
        dc.modulated_deform_conv(x, offset, mask, weight, None, 1, 1, 1, 1, 1).sum().backward()
    except NotImplementedError:
        return False
    return True


def _route_cpu_deform_conv(dc):
    """CPU inputs to the torchvision versions, CUDA inputs to detectron2's compiled kernels."""
    compiled, compiled_modulated = dc.deform_conv, dc.modulated_deform_conv

    def deform_conv(x, *args):
        return (compiled if x.is_cuda else _deform_conv)(x, *args)

    def modulated_deform_conv(x, *args):
        return (compiled_modulated if x.is_cuda else _modulated_deform_conv)(x, *args)

    dc.deform_conv, dc.modulated_deform_conv = deform_conv, modulated_deform_conv


def apply():
    if has_compiled_ops():
        dc = importlib.import_module("detectron2.layers.deform_conv")
        if not _cpu_deform_conv_trains(dc):
            _route_cpu_deform_conv(dc)
        return
    import detectron2

    stand_in = _stand_in_module()
    sys.modules[_MODULE] = stand_in
    detectron2._C = stand_in

    dc = importlib.import_module("detectron2.layers.deform_conv")
    dc.deform_conv = _deform_conv  # DeformConv.forward looks these names up at call time
    dc.modulated_deform_conv = _modulated_deform_conv
    _register_rotated_operators()
