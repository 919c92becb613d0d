"""fpt.compat.c_ops: every rotated op fails with one clear error; a ``detectron2._C`` that
cannot load or lacks ops is replaced by the stand-ins (and said so), not trusted."""

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

pytestmark = pytest.mark.skipif(compat.HAS_COMPILED_OPS, reason="compiled detectron2 in use")

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
    rrpn = RRPN(cfg, {"res4": ShapeSpec(channels=8, stride=16)}).eval()
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    with torch.no_grad():
        rrpn(images, {"res4": torch.rand(1, 8, 4, 4)})


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


@pytest.mark.parametrize(
    "functions, verdict, reason",
    [
        (None, False, r"does not load \(_C.so: undefined symbol"),
        (c_ops._C_FUNCTIONS[:3], False, r"lacks deform_conv_forward, "),
        (c_ops._C_FUNCTIONS, True, None),
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
