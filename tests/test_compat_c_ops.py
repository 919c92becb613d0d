"""fpt.compat.c_ops: without compiled ops every rotated op fails with one clear error; with a
real compiled ``detectron2._C`` (0.6's or main's layout) it is used and its rotated ops give the
axis-aligned references; a ``detectron2._C`` that cannot load or lacks ops is replaced by the
stand-ins (and said so), not trusted."""

import contextlib
import os
import re
import subprocess
import sys

import pytest
import torch

import fpt  # noqa: F401
from fpt import compat
from fpt.compat import c_ops
from fpt.compat.c_ops import MissingCompiledOp
from fake_compiled_c import FakeCompiledModule

needs_stand_ins = pytest.mark.skipif(
    compat.HAS_COMPILED_OPS,
    reason="detectron2._C provides the rotated ops here: test_compiled_rotated_ops_* check them",
)
needs_compiled = pytest.mark.skipif(
    not compat.HAS_COMPILED_OPS,
    reason="Python-only detectron2: the stand-ins raise (test_every_rotated_op_raises_*)",
)

BOX = torch.tensor([[10.0, 10.0, 4.0, 6.0, 30.0], [11.0, 10.0, 4.0, 6.0, 25.0]])


def _rrpn_inference():
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.proposal_generator.rrpn import RRPN
    from detectron2.structures import ImageList

    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "RotatedAnchorGenerator"
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32]]
    cfg.MODEL.ANCHOR_GENERATOR.ANGLES = [[0, 45]]
    cfg.MODEL.RPN.IN_FEATURES = ["res4"]
    cfg.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)
    torch.manual_seed(0)
    rrpn = RRPN(cfg, {"res4": ShapeSpec(channels=8, stride=16)}).eval()
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    with torch.no_grad():
        return rrpn(images, {"res4": torch.rand(1, 8, 4, 4)})


def _roi_align_rotated():
    from detectron2.layers import ROIAlignRotated

    ROIAlignRotated((7, 7), 1.0, 0)(torch.zeros(1, 2, 8, 8), torch.tensor([[0.0, 4, 4, 2, 2, 0]]))


def _call(name):
    from detectron2.layers import batched_nms_rotated, nms_rotated
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    return {
        "nms_rotated": lambda: nms_rotated(BOX, torch.ones(2), 0.5),
        "batched_nms_rotated": lambda: batched_nms_rotated(BOX, torch.ones(2), torch.zeros(2), 0.5),
        "pairwise_iou_rotated": lambda: pairwise_iou_rotated(RotatedBoxes(BOX), RotatedBoxes(BOX)),
        "ROIAlignRotated": _roi_align_rotated,
        "RRPN": _rrpn_inference,
    }[name]


@pytest.mark.parametrize(
    "name",
    ["nms_rotated", "batched_nms_rotated", "pairwise_iou_rotated", "ROIAlignRotated", "RRPN"],
)
@needs_stand_ins
def test_every_rotated_op_raises_the_clear_error(name):
    with pytest.raises(MissingCompiledOp) as e:
        _call(name)()
    message = str(e.value)
    assert "\n" not in message and "needs detectron2's compiled ops" in message


@contextlib.contextmanager
def _fake_compiled_module(finder):
    saved = sys.modules.pop(c_ops._MODULE)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.modules[c_ops._MODULE] = saved


WITHOUT_DEFORM = tuple(n for n in c_ops._C_FUNCTIONS if "deform" not in n)
ROTATED_AS_FUNCTIONS = c_ops._C_FUNCTIONS + tuple(c_ops._ROTATED_OPS)


@pytest.mark.parametrize(
    "functions, verdict, reason",
    [
        (None, False, r"does not load \(_C.so: undefined symbol"),
        (WITHOUT_DEFORM, False, r"lacks deform_conv_forward, "),
        (ROTATED_AS_FUNCTIONS, True, None),
    ],
)
def test_compiled_ops_are_imported_and_checked(functions, verdict, reason):
    """Present means importable with every op: a file that is merely found is not enough."""
    with _fake_compiled_module(FakeCompiledModule(functions)):
        has, why = c_ops._check_compiled()
    assert has is verdict
    if reason is None:
        assert why is None
    else:
        assert why is not None and re.search(reason, why), why


def test_a_compiled_module_that_does_not_load_is_replaced():
    """End to end: detectron2 imports and works with the stand-ins; one logged line says why."""
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from fake_compiled_c import FakeCompiledModule\n"
        "sys.meta_path.insert(0, FakeCompiledModule())\n"
        "import torch, fpt, detectron2.modeling, detectron2.evaluation\n"
        "from fpt import compat\n"
        "from detectron2.layers import nms_rotated\n"
        "assert not compat.HAS_COMPILED_OPS\n"
        "try:\n"
        "    nms_rotated(torch.ones(1, 5), torch.ones(1), 0.5)\n"
        "except compat.c_ops.MissingCompiledOp:\n"
        "    print('clear error')\n"
    )
    r = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout == "clear error\n"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "detectron2._C does not load" in lines[0], r.stderr
    assert "undefined symbol" in lines[0] and "stand-ins" in lines[0]


@needs_stand_ins
def test_stand_in_operators_do_not_count_as_compiled():
    """detectron2 main's layout: the rotated ops are operators, not functions of ``_C``; the
    operators fpt registered itself (raising the clear error) must not make a ``_C`` with main's
    functions look complete."""
    with _fake_compiled_module(FakeCompiledModule(c_ops._C_FUNCTIONS)):
        has, why = c_ops._check_compiled()
    assert has is False
    assert why.startswith("detectron2._C lacks box_iou_rotated, roi_align_rotated_forward")


@needs_compiled
def test_a_real_compiled_module_is_used():
    """A compiled detectron2 (0.6's or main's layout) is recognised: no stand-in, no log line."""
    module = sys.modules[c_ops._MODULE]
    assert not getattr(module, "__fpt_stand_in__", False)
    assert module.__file__.endswith(".so")
    assert not c_ops._STAND_IN_OPS
    r = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "import fpt, detectron2.modeling, detectron2.evaluation",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]


def _random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 50 + 10
    size = torch.rand(n, 2, generator=g) * 20 + 4
    return torch.cat([centre, size], dim=1)  # (n, 4) cx, cy, w, h


def _xyxy(cxcywh):
    c, s = cxcywh[:, :2], cxcywh[:, 2:]
    return torch.cat([c - s / 2, c + s / 2], dim=1)


def _with_angle(cxcywh, angle):
    return torch.cat([cxcywh, torch.full((len(cxcywh), 1), float(angle))], dim=1)


@needs_compiled
def test_compiled_rotated_iou_matches_references():
    from detectron2.structures import Boxes, RotatedBoxes, pairwise_iou, pairwise_iou_rotated

    boxes = _random_boxes(12, seed=0)
    ref = pairwise_iou(Boxes(_xyxy(boxes)), Boxes(_xyxy(boxes)))
    at_0 = pairwise_iou_rotated(
        RotatedBoxes(_with_angle(boxes, 0)), RotatedBoxes(_with_angle(boxes, 0))
    )
    # a box turned by 90 degrees with width and height swapped is the same box
    swapped = boxes[:, [0, 1, 3, 2]]
    at_90 = pairwise_iou_rotated(
        RotatedBoxes(_with_angle(swapped, 90)), RotatedBoxes(_with_angle(boxes, 0))
    )
    assert ref.max() > 0.2 and (ref > 0).sum() > len(boxes)  # overlaps to compare, not all zero
    torch.testing.assert_close(at_0, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(at_90, ref, atol=1e-4, rtol=0)
    # a square and itself turned by 45 degrees: a regular octagon, IoU = 1/sqrt(2)
    square = torch.tensor([[20.0, 20.0, 10.0, 10.0]])
    iou = pairwise_iou_rotated(
        RotatedBoxes(_with_angle(square, 45)), RotatedBoxes(_with_angle(square, 0))
    )
    assert abs(iou.item() - 2**-0.5) < 1e-4


@needs_compiled
def test_compiled_rotated_nms_matches_torchvision():
    import torchvision
    from detectron2.layers import batched_nms_rotated, nms_rotated

    boxes = _random_boxes(40, seed=1)
    scores = torch.rand(40, generator=torch.Generator().manual_seed(2))
    classes = torch.arange(40) % 3
    keep = nms_rotated(_with_angle(boxes, 0), scores, 0.3)
    ref = torchvision.ops.nms(_xyxy(boxes), scores, 0.3)
    assert 0 < len(ref) < len(boxes)  # some boxes suppressed, some kept
    assert keep.tolist() == ref.tolist()
    keep = batched_nms_rotated(_with_angle(boxes, 0), scores, classes, 0.3)
    assert keep.tolist() == torchvision.ops.batched_nms(_xyxy(boxes), scores, classes, 0.3).tolist()


@needs_compiled
def test_compiled_roi_align_rotated_matches_roi_align():
    """At angle 0, ROIAlignRotated samples as ROIAlign(aligned=True): forward and gradient."""
    from detectron2.layers import ROIAlign, ROIAlignRotated

    g = torch.Generator().manual_seed(3)
    boxes = _random_boxes(6, seed=4) / 2
    batch = torch.tensor([[0.0], [1.0]] * 3)
    grads = []
    for layer, rois in [
        (ROIAlignRotated((5, 5), 0.5, 2), torch.cat([batch, _with_angle(boxes, 0)], dim=1)),
        (ROIAlign((5, 5), 0.5, 2, aligned=True), torch.cat([batch, _xyxy(boxes)], dim=1)),
    ]:
        x = torch.rand(2, 3, 32, 32, generator=g.manual_seed(5), requires_grad=True)
        out = layer(x, rois)
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        grads.append((out.detach(), x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-5)


@needs_compiled
def test_compiled_rrpn_gives_proposals():
    proposals, _ = _rrpn_inference()
    boxes = proposals[0].proposal_boxes.tensor
    assert boxes.shape[1] == 5 and 0 < len(boxes) <= 4 * 4 * 6  # 3 aspect ratios x 2 angles
    assert torch.isfinite(boxes).all() and torch.isfinite(proposals[0].objectness_logits).all()
