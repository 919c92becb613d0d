"""The FPT neck: wiring, shapes at odd sizes, every ablation switch, gradients, the yacs builder."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from fpt.modeling import (
    FPT,
    BottomUpPyramid,
    GroundingTransformer,
    SelfTransformer,
    add_fpt_config,
)

C = 8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class _GivenPyramid(Backbone):
    """A pyramid whose "image" is the dict of its levels: lets the neck run on chosen sizes."""

    def __init__(self, channels=(C, C, C, C)):
        super().__init__()
        self._out_features = [f"p{l}" for l in range(2, 2 + len(channels))]
        self._out_feature_strides = {f: 2 ** (i + 2) for i, f in enumerate(self._out_features)}
        self._out_feature_channels = dict(zip(self._out_features, channels))

    def forward(self, x):
        return x


def _levels(p5_size=(2, 3), batch=2, channels=C):
    h, w = p5_size
    return {
        f"p{l}": torch.randn(batch, channels, h * 2 ** (5 - l), w * 2 ** (5 - l))
        for l in range(2, 6)
    }


def test_odd_sizes_800x1344():
    """p5 of 25 x 42 and the matching p2..p4 (an 800 x 1344 image); p6 = max-pool(p5, 1, 2)."""
    neck = FPT(
        _GivenPyramid(),
        out_channels=16,
        top_block=LastLevelMaxPool(),
        kv_pool=[8, 4, 1, 1],
        grounding_mode=["local", "global", "global", "global"],
    )
    with torch.no_grad():
        out = neck(_levels((25, 42), batch=1))
    expected = {"p2": (200, 336), "p3": (100, 168), "p4": (50, 84), "p5": (25, 42), "p6": (13, 21)}
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == expected
    shapes = neck.output_shape()
    assert [shapes[f].stride for f in expected] == [4, 8, 16, 32, 64]
    assert all(v.shape[1] == 16 == shapes[k].channels for k, v in out.items())
    assert neck.size_divisibility == 32
    torch.testing.assert_close(out["p6"], F.max_pool2d(out["p5"], 1, 2))


def test_every_level_concatenates_st_gt_from_coarser_rt_from_finer():
    neck = FPT(_GivenPyramid(), out_channels=C)
    assert len(neck.self_transformers) == 4
    assert sorted(neck.grounding_transformers) == sorted(
        f"p{c}_to_p{f}" for f in range(2, 6) for c in range(f + 1, 6)
    )
    assert sorted(neck.rendering_transformers) == sorted(
        f"p{f}_to_p{c}" for c in range(2, 6) for f in range(2, c)
    )
    assert all(conv.in_channels == 5 * C for conv in neck.fusion_convs.values())
    assert [neck.rendering_transformers[f"p{f}_to_p5"].value_down.__len__() for f in (2, 3, 4)] == [
        3,
        2,
        1,
    ]
    x = _levels()
    with torch.no_grad():
        out = neck(x)
        for level in range(2, 6):
            name = f"p{level}"
            parts = [x[name], neck.self_transformers[name](x[name])]
            parts += [
                neck.grounding_transformers[f"p{c}_to_{name}"](x[name], x[f"p{c}"])
                for c in range(level + 1, 6)
            ]
            parts += [
                neck.rendering_transformers[f"p{f}_to_{name}"](x[name], x[f"p{f}"])
                for f in range(2, level)
            ]
            expected = neck.fusion_convs[name](torch.cat(parts, 1))
            torch.testing.assert_close(out[name], expected)
    assert set(out) == {"p2", "p3", "p4", "p5"}  # no top block


ABLATIONS = {
    "full": {},
    "bfp": dict(self_transformer=False, grounding_transformer=False, rendering_transformer=False),
    "st_only": dict(grounding_transformer=False, rendering_transformer=False),
    "gt_only": dict(self_transformer=False, rendering_transformer=False),
    "rt_only": dict(self_transformer=False, grounding_transformer=False),
    "parts": dict(self_parts=1, grounding_parts=2),
    "similarities": dict(self_similarity="euclidean", grounding_similarity="dot"),
    "local_gt": dict(grounding_mode="local", grounding_window=5),
    "local_p2_pool": dict(
        grounding_mode=["local", "global", "global", "global"], kv_pool=[2, 2, 1, 1]
    ),
    "inner": dict(inner_channels=4),
    "chunked": dict(attention="chunked", chunk_size=16),
    "naive": dict(attention="naive"),
    "bn_dropblock": dict(norm="BN", dropblock_prob=0.2, dropblock_size=3),
    "syncbn": dict(norm="SyncBN"),
    "gn": dict(norm="GN", channels=32),
    "fast": dict(grounding_mode="local", kv_pool=[8, 4, 2, 1], fusion_kernel_size=1),
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_switch_builds_and_every_parameter_gets_a_gradient(name):
    kwargs = dict(ABLATIONS[name])
    channels = kwargs.pop("channels", C)
    neck = FPT(_GivenPyramid([channels] * 4), top_block=LastLevelMaxPool(), **kwargs).train()
    out = neck(_levels(channels=channels))
    assert set(out) == {"p2", "p3", "p4", "p5", "p6"}
    sum(o.mul(torch.randn_like(o)).sum() for o in out.values()).backward()
    no_grad = [n for n, p in neck.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not no_grad, f"no gradient reaches {no_grad}"
    st, gt, rt = (
        len(neck.self_transformers),
        len(neck.grounding_transformers),
        len(neck.rendering_transformers),
    )
    assert (st, gt, rt) == (
        4 * kwargs.get("self_transformer", True),
        6 * kwargs.get("grounding_transformer", True),
        6 * kwargs.get("rendering_transformer", True),
    )
    if "self_parts" in kwargs:
        assert neck.self_transformers["p2"].attention.mixture is None  # one part: pi = 1
        assert neck.grounding_transformers["p3_to_p2"].attention.mixture.proj.out_features == 2
    if name == "local_p2_pool":
        assert neck.grounding_transformers["p3_to_p2"].mode == "local"
        assert neck.grounding_transformers["p4_to_p3"].mode == "global"
        assert neck.self_transformers["p2"].attention.kv_pool == 2
        assert neck.grounding_transformers["p3_to_p2"].attention.kv_pool == 1  # local: none
        assert neck.grounding_transformers["p5_to_p4"].attention.kv_pool == 1
    if "norm" in kwargs:
        assert type(neck.rendering_transformers["p2_to_p3"].refine.norm) is type(
            neck.fusion_convs["p2"].norm
        )
        assert (
            type(neck.fusion_convs["p2"].norm).__name__
            == {"BN": "BatchNorm2d", "SyncBN": "SyncBatchNorm", "GN": "GroupNorm"}[kwargs["norm"]]
        )
    assert neck.dropblock_prob == kwargs.get("dropblock_prob", 0.0)
    kernel = kwargs.get("fusion_kernel_size", 3)
    assert {conv.kernel_size for conv in neck.fusion_convs.values()} == {(kernel, kernel)}


def test_dropblock_only_in_training():
    neck = FPT(_GivenPyramid(), dropblock_prob=0.5, dropblock_size=1)
    x = _levels()
    neck.eval()
    with torch.no_grad():
        a, b = neck(x)["p2"], neck(x)["p2"]
        torch.testing.assert_close(a, b)
        neck.train()
        dropped = neck(x)["p2"]
    assert (dropped == 0).float().mean() > 0.3


@pytest.mark.parametrize("base", ["BFP", "FPN"])
def test_yacs_builder(base):
    cfg = add_fpt_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpt_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPT.OUT_CHANNELS = 16
    cfg.MODEL.FPT.BASE = base
    cfg.MODEL.FPT.GROUNDING_MODE = "local"
    cfg.MODEL.FPT.KV_POOL = [2, 1, 1, 1]
    cfg.MODEL.FPT.FUSION_KERNEL_SIZE = 1
    backbone = build_backbone(cfg)
    assert isinstance(backbone, FPT)
    assert isinstance(backbone.pyramid, {"BFP": BottomUpPyramid, "FPN": FPN}[base])
    assert backbone.grounding_transformers["p5_to_p2"].mode == "local"
    assert backbone.self_transformers["p2"].attention.kv_pool == 2
    assert backbone.fusion_convs["p2"].kernel_size == (1, 1)
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "p2": (16, 16, 24),
        "p3": (16, 8, 12),
        "p4": (16, 4, 6),
        "p5": (16, 2, 3),
        "p6": (16, 1, 2),
    }


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("GROUNDING_MODE", "windowed", "grounding_mode='windowed'"),
        ("BASE", "UFP", "base='UFP'"),
        ("KV_POOL", [1, 1], "kv_pool"),
        ("ATTENTION", "flash", "attention='flash'"),
    ],
)
def test_yacs_bad_values_name_the_key(key, value, message):
    cfg = add_fpt_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpt_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPT[key] = value
    with pytest.raises(ValueError, match=f"MODEL.FPT: .*{message}"):
        build_backbone(cfg)


def test_fusion_kernel_size():
    """fusion_kernel_size=1: a 1x1 fusion conv (here over X_l alone: no transformers)."""
    switches = dict(self_transformer=False, grounding_transformer=False)
    neck = FPT(_GivenPyramid(), rendering_transformer=False, fusion_kernel_size=1, **switches)
    levels = _levels()
    conv = neck.fusion_convs["p3"]
    assert conv.kernel_size == (1, 1)
    torch.testing.assert_close(neck(levels)["p3"], F.conv2d(levels["p3"], conv.weight, conv.bias))
    with pytest.raises(ValueError, match="fusion_kernel_size=2"):
        FPT(_GivenPyramid(), fusion_kernel_size=2)


def test_yacs_without_fpt_node():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpt_backbone"
    with pytest.raises(KeyError, match="add_fpt_config"):
        build_backbone(cfg)


def test_unequal_pyramid_channels_rejected():
    with pytest.raises(ValueError, match="equal channels"):
        FPT(_GivenPyramid(channels=(8, 8, 8, 16)))


def test_transformers_are_the_paper_defaults():
    neck = FPT(_GivenPyramid())
    st, gt = neck.self_transformers["p2"], neck.grounding_transformers["p3_to_p2"]
    assert isinstance(st, SelfTransformer) and isinstance(gt, GroundingTransformer)
    assert (st.attention.mixture.proj.out_features, st.attention.similarity) == (2, "dot")
    assert (gt.attention.mixture.proj.out_features, gt.attention.similarity) == (4, "euclidean")
    assert gt.mode == "global"
