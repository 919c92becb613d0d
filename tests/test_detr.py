"""DETR model pieces (fpt/modeling/detr) against docs/irpe_detr.md sections 5, 7 and 11.3-11.7.

The references are written out here, independently of the code: the sine position encoding, the
iRPE attention in Cream's order (fp64, with a fixed dropout mask), the matcher's cost with a
brute force over all assignments, the set losses, the inference post-processing, the xavier
bounds and the optimizer groups of the COCO configs.
"""

import importlib
import itertools
import math
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import get_cfg, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_model
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from fpt.config import load_config
from fpt.layers.irpe import IRPE, bucket_ids, parse_rpe_spec
from fpt.modeling.detr import (
    DETR,
    HungarianMatcher,
    PositionEmbeddingSine,
    RPEMultiheadAttention,
    SetCriterion,
    Transformer,
    add_detr_config,
    generalized_box_iou,
)
from support import assert_loss_falls, train_steps

detr_transformer = importlib.import_module("fpt.modeling.detr.transformer")

LOSS_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
COCO_DETR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/COCO/DETR"
)


# ---------------------------------------------------------------------------------------------
# a tiny DETR: a two-conv backbone of stride 8, a 32-wide transformer
# ---------------------------------------------------------------------------------------------
class TinyBackbone(Backbone):
    def __init__(self, channels=16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.conv2 = nn.Conv2d(8, channels, kernel_size=2, stride=2)
        self.channels = channels

    def forward(self, x):
        return {"res5": self.conv2(F.relu(self.conv1(x)))}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.channels, stride=8)}


def tiny_detr(enc_rpe=None, dec_layers=2, num_queries=5, num_classes=3, **kwargs):
    torch.manual_seed(0)
    return DETR(
        backbone=TinyBackbone(),
        transformer=Transformer(
            d_model=32,
            nhead=4,
            num_encoder_layers=2,
            num_decoder_layers=dec_layers,
            dim_feedforward=64,
            dropout=0.0,
            enc_rpe=enc_rpe,
        ),
        num_classes=num_classes,
        num_queries=num_queries,
        **kwargs,
    )


def image_batch(sizes, seed=0, with_instances=True):
    """Images of the given (H, W) with boxes (cycled classes); some images may have 0 boxes."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for idx, (h, w) in enumerate(sizes):
        image = torch.rand(3, h, w, generator=g) * 255
        item = {"image": image}
        if with_instances:
            n = idx % 3 + 1
            x0 = torch.rand(n, generator=g) * w * 0.5
            y0 = torch.rand(n, generator=g) * h * 0.5
            bw = torch.rand(n, generator=g) * w * 0.4 + 4
            bh = torch.rand(n, generator=g) * h * 0.4 + 4
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1))
            inst.gt_classes = torch.arange(n) % 3
            item["instances"] = inst
        batch.append(item)
    return batch


# ---------------------------------------------------------------------------------------------
# 1. sine position encoding
# ---------------------------------------------------------------------------------------------
def hand_sine(mask, num_feats):
    """The sine encoding of section 5.1, cell by cell in Python floats."""
    B, h, w = mask.shape
    valid = (~mask).tolist()
    out = torch.zeros(B, 2 * num_feats, h, w, dtype=torch.float64)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                y = sum(valid[b][r][j] for r in range(i + 1))
                y_total = sum(valid[b][r][j] for r in range(h))
                x = sum(valid[b][i][c] for c in range(j + 1))
                x_total = sum(valid[b][i][c] for c in range(w))
                y = y / (y_total + 1e-6) * 2 * math.pi
                x = x / (x_total + 1e-6) * 2 * math.pi
                for k in range(num_feats):
                    dim = 10000 ** (2 * (k // 2) / num_feats)
                    f = math.sin if k % 2 == 0 else math.cos
                    out[b, k, i, j] = f(y / dim)  # y first
                    out[b, num_feats + k, i, j] = f(x / dim)
    return out


def test_sine_position_encoding_equals_hand_values():
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, 2, :] = True  # image 1: 2 x 3 valid, padded bottom and right
    mask[1, :, 3] = True
    pos = PositionEmbeddingSine(6, normalize=True)(mask)
    assert pos.shape == (2, 12, 3, 4) and pos.dtype == torch.float32
    torch.testing.assert_close(pos.double(), hand_sine(mask, 6), atol=2e-6, rtol=0)
    # a few values by eye: image 0, row 0 of 3 -> y = 2 pi / 3; column 1 of 4 -> x = pi
    assert pos[0, 0, 0, 0].item() == pytest.approx(math.sin(2 * math.pi / 3), abs=1e-5)
    assert pos[0, 1, 0, 0].item() == pytest.approx(math.cos(2 * math.pi / 3), abs=1e-5)
    assert pos[0, 6, 0, 1].item() == pytest.approx(0.0, abs=1e-5)  # sin(pi)
    assert pos[0, 7, 0, 1].item() == pytest.approx(-1.0, abs=1e-5)  # cos(pi)
    # image 1, row 1 is the last valid row: y = 2 pi (normalized by the valid extent, not 3)
    assert pos[1, 1, 1, 0].item() == pytest.approx(1.0, abs=1e-5)
    # dim_t pairs: channels 2, 3 use 10000 ** (2/6)
    assert pos[0, 2, 0, 0].item() == pytest.approx(math.sin(2 * math.pi / 3 / 10000 ** (1 / 3)))
    # a fully padded column encodes position 0 (cumsum 0 / (0 + 1e-6))
    assert pos[1, 0:6:2, :, 3].abs().max().item() == 0.0


def test_padding_does_not_change_valid_position_encodings():
    pe = PositionEmbeddingSine(8, normalize=True)
    alone = pe(torch.zeros(1, 2, 3, dtype=torch.bool))
    padded_mask = torch.ones(1, 5, 7, dtype=torch.bool)
    padded_mask[0, :2, :3] = False
    padded = pe(padded_mask)
    torch.testing.assert_close(padded[..., :2, :3], alone, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# 2. the padding mask
# ---------------------------------------------------------------------------------------------
def fake_images(sizes, padded):
    """An ImageList of the given unpadded sizes (only shapes matter for the mask)."""
    return ImageList(torch.zeros(1, 1, 1, 1).expand(len(sizes), 3, *padded), sizes)


def test_padding_mask_is_nearest_resized_pixel_mask():
    model = tiny_detr()
    mask = model.padding_mask(fake_images([(800, 600), (1000, 1000)], (1000, 1000)), (32, 32))
    assert mask.shape == (2, 32, 32) and mask.dtype == torch.bool
    # nearest: feature row i samples pixel row floor(i * 1000 / 32) -> valid while < 800
    rows = sum(1 for i in range(32) if math.floor(i * 1000 / 32) < 800)
    cols = sum(1 for i in range(32) if math.floor(i * 1000 / 32) < 600)
    assert (rows, cols) == (26, 20)
    assert (math.ceil(800 / 32), math.ceil(600 / 32)) == (25, 19)  # the d2 wrapper's rule
    expected = torch.ones(32, 32, dtype=torch.bool)
    expected[:26, :20] = False
    assert torch.equal(mask[0], expected)
    assert not mask[1].any()


def test_padding_mask_tiny_image_keeps_its_first_cell():
    # nearest always samples pixel (0, 0) for cell (0, 0): a tiny image keeps one valid cell
    model = tiny_detr()
    mask = model.padding_mask(fake_images([(10, 10), (1000, 1000)], (1000, 1000)), (32, 32))
    assert (~mask[0]).sum().item() == 1 and not mask[0, 0, 0]


def test_padding_mask_without_valid_cell_raises_one_line():
    model = tiny_detr()
    with pytest.raises(ValueError, match="has no valid cell") as e:
        model.padding_mask(fake_images([(64, 64), (0, 0)], (64, 64)), (8, 8))
    assert "\n" not in str(e.value) and "image 1" in str(e.value)


# ---------------------------------------------------------------------------------------------
# 3. RPEMultiheadAttention
# ---------------------------------------------------------------------------------------------
def grid_padding_mask(B, hw, valid):
    """(B, H W) key padding mask of images whose valid (h, w) sit top-left in the grid."""
    H, W = hw
    mask = torch.ones(B, H, W, dtype=torch.bool)
    for b, (h, w) in enumerate(valid):
        mask[b, :h, :w] = False
    return mask.flatten(1)


def rpe_tables(mod, letter):
    """[(table, bucket ids method)] of rpe_{letter}, by Cream's parameter names."""
    spec = mod.rpe
    if spec is None or letter not in spec.rpe_on:
        return []
    params = dict(mod.named_parameters())
    name = "lookup_table_bias" if spec.mode == "bias" else "lookup_table_weight"
    if spec.method == "cross":
        return [
            (params[f"rpe_{letter}.rp_rows.{name}"], "cross_rows"),
            (params[f"rpe_{letter}.rp_cols.{name}"], "cross_cols"),
        ]
    return [(params[f"rpe_{letter}.{name}"], spec.method)]


def naive_attention(mod, query, key, value, hw, key_padding_mask=None, keep=None, p=0.0):
    """Cream's order in fp64 (section 2.4), the bucket terms on materialized tables."""
    L, B, C = query.shape
    H = mod.num_heads
    D = C // H
    w_q, w_k, w_v = mod.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mod.in_proj_bias.chunk(3)

    def split(x, w, b):
        return (x @ w.T + b).reshape(x.shape[0], B, H, D).permute(1, 2, 0, 3)

    q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
    s = D**-0.5
    q = q * s
    logits = q @ k.transpose(-2, -1)
    spec = mod.rpe
    for table, method in rpe_tables(mod, "k"):  # k-term first
        ids = bucket_ids(*hw, method, spec.ratio)
        table = table.expand(H, *table.shape[1:])
        if spec.mode == "bias":
            logits = logits + table[:, ids][None]
        else:  # [b, h, i, j] = q_i . W[h, :, b(i, j)]
            logits = logits + torch.einsum("bhid,hdij->bhij", q, table[:, :, ids])
    for table, method in rpe_tables(mod, "q"):
        ids = bucket_ids(*hw, method, spec.ratio)
        table = table.expand(H, *table.shape[1:])
        if spec.mode == "bias":
            logits = logits + table[:, ids.T][None]
        else:  # [b, h, i, j] = (s k_j) . W[h, :, b(j, i)]
            logits = logits + torch.einsum("bhjd,hdij->bhij", k * s, table[:, :, ids.T])
    if key_padding_mask is not None:
        logits = logits.masked_fill(
            key_padding_mask[:, None, None, :], torch.finfo(logits.dtype).min
        )
    attn = logits.softmax(-1)
    if keep is not None:
        attn = attn * keep / (1 - p)
    out = attn @ v
    for table, method in rpe_tables(mod, "v"):
        ids = bucket_ids(*hw, method, spec.ratio)
        table = table.expand(H, *table.shape[1:])  # (H, nb, D) -> per pair (H, L, L, D)
        out = out + torch.einsum("bhij,hijd->bhid", attn, table[:, ids])
    out = out.permute(2, 0, 1, 3).reshape(L, B, C)
    return mod.out_proj(out)


class FixedDropout:
    """Stands in for ``torch.nn.functional`` in the transformer module: ``dropout`` applies a
    fixed keep mask; everything else is torch's."""

    def __init__(self, keep, p):
        self.keep, self.p, self.calls = keep, p, 0

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def dropout(self, x, p=0.5, training=True, inplace=False):
        assert training and p == self.p
        self.calls += 1
        return x * self.keep / (1 - p)


def random_inputs(L, B, C, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(L, B, C, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


def test_rpe_attention_without_rpe_equals_nn_multihead_attention():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4).double().eval()
    nn.init.normal_(mha.in_proj_bias)
    nn.init.normal_(mha.out_proj.bias)
    ours = RPEMultiheadAttention(16, 4).double().eval()
    ours.load_state_dict(mha.state_dict())  # strict: the same names
    query, key, value = random_inputs(6, 3, 16)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 4:] = True
    mask[2, 1::2] = True
    expected = mha(query, key, value, key_padding_mask=mask, need_weights=False)[0]
    got, weights = ours(query, key, value, key_padding_mask=mask)
    assert weights is None
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    # and without a mask, fp32
    mha.float()
    ours.float()
    q32 = query.detach().float()
    torch.testing.assert_close(ours(q32, q32, q32)[0], mha(q32, q32, q32, need_weights=False)[0])


RPE_SPECS = [
    "rpe-2.0-product-ctx-1-k",  # DETR-with-iRPE
    "rpe-1.9-product-ctx-0-qk",
    "rpe-1.9-product-bias-0-qk",
    "rpe-2.0-euc-bias-1-q",
    "rpe-1.9-quant-ctx-0-k",
    "rpe-1.9-cross-ctx-1-qk",
    "rpe-2.0-cross-bias-0-k",
    "rpe-1.9-product-ctx-1-v",
    "rpe-2.0-euc-ctx-0-kv",
    "rpe-1.9-cross-ctx-0-qkv",
    "rpe-2.0-product-ctx-0-qkv",
]


@pytest.mark.parametrize(
    "spec, masked",
    [(s, True) for s in RPE_SPECS]
    + [(s, False) for s in ("rpe-2.0-product-ctx-1-k", "rpe-1.9-euc-bias-0-qk")]
    + [("rpe-2.0-quant-ctx-0-qkv", False)],
)
def test_rpe_attention_equals_naive_reference(spec, masked, monkeypatch):
    hw, B, C, heads, p = (3, 4), 2, 16, 4, 0.25
    L = hw[0] * hw[1]
    torch.manual_seed(1)
    mod = RPEMultiheadAttention(C, heads, dropout=p, rpe=spec).double()
    for name, param in mod.named_parameters():
        if "lookup_table" in name:
            assert not param.detach().any()  # zero init: bare iRPE
            nn.init.normal_(param, std=0.5)
        elif "bias" in name:
            nn.init.normal_(param, std=0.2)
    query, key, value = random_inputs(L, B, C, seed=2)
    mask = grid_padding_mask(B, hw, [(3, 4), (2, 3)])  # image 1: bottom row, right column padded
    mask = mask if masked else None
    has_v = "v" in parse_rpe_spec(spec).rpe_on
    keep = None
    if has_v:  # the explicit path in train mode with a fixed dropout mask before the v term
        keep = (torch.rand(B, heads, L, L, generator=torch.Generator().manual_seed(3)) > p).double()
        fixed = FixedDropout(keep, p)
        monkeypatch.setattr(detr_transformer, "F", fixed)
        mod.train()
    else:  # the SDPA path, no dropout
        mod.eval()
    got = mod(query, key, value, hw=hw, key_padding_mask=mask)[0]
    expected = naive_attention(mod, query, key, value, hw, mask, keep=keep, p=p if has_v else 0.0)
    if has_v:
        assert fixed.calls == 1
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(4), dtype=got.dtype)
    inputs = [query, key, value] + list(mod.parameters())
    grads = torch.autograd.grad((got * g).sum(), inputs)
    grads_ref = torch.autograd.grad((expected * g).sum(), inputs)
    names = ["query", "key", "value"] + [n for n, _ in mod.named_parameters()]
    for name, a, b in zip(names, grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)
    tables = [a for name, a in zip(names, grads) if "lookup_table" in name]
    assert tables and all(t.abs().sum() > 0 for t in tables)


def test_padding_bias_plus_large_terms_stays_finite_in_fp16():
    """The padded-key bias leaves room for the logits and iRPE terms: no -inf in fp16."""
    from fpt.modeling.detr.transformer import _padding_bias

    mask = torch.tensor([[False, True, True]])
    bias = _padding_bias(mask, torch.tensor([[False, False, True]]), torch.float16)
    logits = torch.full((1, 1, 1, 3), -2000.0, dtype=torch.float16)  # logits + iRPE terms
    total = bias + logits
    assert torch.isfinite(total).all() and total.dtype == torch.float16
    assert total[0, 0, 0, 1] < -30000 and total[0, 0, 0, 2] == total[0, 0, 0, 1]  # masked twice
    assert torch.softmax(total.float(), -1)[0, 0, 0].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("spec", [None, "rpe-2.0-product-ctx-1-k", "rpe-2.0-product-ctx-1-kv"])
def test_rpe_attention_fully_padded_rows_average_uniformly(spec, dtype):
    """Also in fp16, where the padding bias plus a negative iRPE term must not reach -inf (NaN
    rows). The uniform average is checked in fp32: in fp16, kernels that add the bias in fp32
    (CPU SDPA) keep the logits' differences on a fully padded row."""
    hw, B, C = (2, 3), 2, 8
    L = 6
    torch.manual_seed(0)
    mod = RPEMultiheadAttention(C, 2, rpe=spec).eval()
    for name, param in mod.named_parameters():
        if "lookup_table" in name:
            nn.init.normal_(param)
    mod = mod.to(dtype)
    query, key, value = [x.detach().to(dtype) for x in random_inputs(L, B, C, seed=5)]
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[1] = True  # image 1: no valid key at all
    out = mod(query, key, value, hw=hw, key_padding_mask=mask)[0]
    assert torch.isfinite(out).all()
    # image 0 is unaffected by image 1's padding
    alone = mod(query[:, :1], key[:, :1], value[:, :1], hw=hw)[0]
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out[:, :1], alone, atol=tol, rtol=tol)
    if dtype != torch.float32:
        return
    w_v, b_v = mod.in_proj_weight.chunk(3)[2], mod.in_proj_bias.chunk(3)[2]
    v = (value[:, 1] @ w_v.T + b_v).view(L, 2, 4)  # (L, heads, D)
    mean = v.mean(0).expand(L, 2, 4)
    if spec is not None and spec.endswith("v"):  # + sum_j (1 / L) Wv[b(i, j)]
        table = mod.rpe_v.lookup_table_weight[0]  # (nb, D), shared
        ids = bucket_ids(*hw, "product", 2.0)
        mean = mean + table[ids].mean(1)[:, None, :]
    expected = mod.out_proj(mean.reshape(L, C))
    torch.testing.assert_close(out[:, 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rpe_attention_sdpa_path_equals_explicit_path(dtype):
    hw, B, C = (3, 5), 2, 16
    torch.manual_seed(0)
    explicit = RPEMultiheadAttention(C, 4, rpe="rpe-2.0-product-ctx-0-qkv").to(dtype).eval()
    for name, param in explicit.named_parameters():
        if "lookup_table" in name:
            nn.init.normal_(param)
    nn.init.zeros_(explicit.rpe_v.lookup_table_weight)  # v term 0: only the path differs
    sdpa = RPEMultiheadAttention(C, 4, rpe="rpe-2.0-product-ctx-0-qk").to(dtype).eval()
    missing, unexpected = sdpa.load_state_dict(explicit.state_dict(), strict=False)
    assert missing == [] and unexpected == ["rpe_v.lookup_table_weight"]
    query, key, value = [x.detach().to(dtype) for x in random_inputs(15, B, C, seed=6)]
    mask = grid_padding_mask(B, hw, [(3, 5), (2, 2)])
    a = explicit(query, key, value, hw=hw, key_padding_mask=mask)[0]
    b = sdpa(query, key, value, hw=hw, key_padding_mask=mask)[0]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_rpe_attention_needs_hw():
    mod = RPEMultiheadAttention(8, 2, rpe="rpe-2.0-product-ctx-1-k")
    x = torch.randn(6, 1, 8)
    with pytest.raises(ValueError, match="hw"):
        mod(x, x, x)
    with pytest.raises(ValueError, match="L=6"):
        mod(x, x, x, hw=(2, 2))


# ---------------------------------------------------------------------------------------------
# 4. names, shapes, init
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def meta_models():
    """The models of the two COCO config families, built on the meta device."""
    models = {}
    for name in ("detr_r50_300ep", "detr_r50_irpe_k_300ep"):
        cfg = load_config(os.path.join(COCO_DETR, name + ".py"))
        with torch.device("meta"):
            models[name] = instantiate(cfg.model)
    return models


def test_detr_irpe_names_and_shapes_on_meta(meta_models):
    model = meta_models["detr_r50_irpe_k_300ep"]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rpe = {k: v for k, v in shapes.items() if "rpe" in k}
    assert sum(math.prod(s) for s in rpe.values()) == 15552 == 6 * 32 * 81
    assert rpe == {
        f"transformer.encoder.layers.{i}.self_attn.rpe_k.lookup_table_weight": (1, 32, 81)
        for i in range(6)
    }
    expected = {
        "input_proj.weight": (256, 2048, 1, 1),
        "query_embed.weight": (100, 256),
        "class_embed.weight": (81, 256),
        "class_embed.bias": (81,),
        "bbox_embed.layers.0.weight": (256, 256),
        "bbox_embed.layers.1.weight": (256, 256),
        "bbox_embed.layers.2.weight": (4, 256),
        "bbox_embed.layers.2.bias": (4,),
        "transformer.decoder.norm.weight": (256,),
        "transformer.decoder.norm.bias": (256,),
    }
    for i in range(6):
        enc = f"transformer.encoder.layers.{i}."
        dec = f"transformer.decoder.layers.{i}."
        expected.update(
            {
                enc + "self_attn.in_proj_weight": (768, 256),
                enc + "self_attn.in_proj_bias": (768,),
                enc + "self_attn.out_proj.weight": (256, 256),
                enc + "linear1.weight": (2048, 256),
                enc + "linear2.weight": (256, 2048),
                enc + "norm1.weight": (256,),
                enc + "norm2.bias": (256,),
                dec + "self_attn.in_proj_weight": (768, 256),
                dec + "multihead_attn.in_proj_weight": (768, 256),
                dec + "multihead_attn.out_proj.weight": (256, 256),
                dec + "norm3.weight": (256,),
            }
        )
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    assert "bbox_embed.layers.3.weight" not in shapes
    assert "transformer.encoder.norm.weight" not in shapes  # post-norm: no final encoder norm
    assert not any("rpe" in k for k in shapes if "decoder" in k)
    assert shapes["backbone.res5.2.conv3.weight"] == (2048, 512, 1, 1)
    plain = meta_models["detr_r50_300ep"].state_dict()
    assert set(plain) == set(shapes) - set(rpe)


def xavier_bound(shape):
    """torch's fan rule: fan_in = size(1) * receptive field, fan_out = size(0) * receptive."""
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize(
    "spec, shape, bound",
    [
        ("rpe-2.0-product-ctx-1-k", (1, 32, 81), 0.04738),
        ("rpe-2.0-product-ctx-0-k", (8, 32, 81), 0.04303),
        ("rpe-2.0-product-bias-1-k", (1, 81), 0.2705),
        ("rpe-1.9-product-ctx-1-k", (1, 32, 49), 0.06091),
    ],
)
def test_detr_tables_are_xavier_initialized(spec, shape, bound):
    assert xavier_bound(shape) == pytest.approx(bound, abs=5e-5)
    torch.manual_seed(0)
    transformer = Transformer(256, 8, 2, 1, dim_feedforward=16, dropout=0.0, enc_rpe=spec)
    tables = [p for n, p in transformer.named_parameters() if "lookup_table" in n]
    assert len(tables) == 2
    for t in tables:
        assert tuple(t.shape) == shape
        assert t.abs().max().item() <= xavier_bound(shape)
        # spread over the whole range, as a uniform (not zero, not a narrow normal)
        assert t.abs().max().item() > 0.9 * xavier_bound(shape)
        if t.numel() > 1000:
            assert t.std().item() == pytest.approx(xavier_bound(shape) / math.sqrt(3), rel=0.1)
    assert not torch.equal(tables[0], tables[1])  # each layer its own draw
    # a bare IRPE is zero
    bare = IRPE(32, 8, mode="ctx", method="product", ratio=2.0)
    assert tuple(bare.lookup_table_weight.shape) == (1, 32, 81)
    assert not bare.lookup_table_weight.any()


# ---------------------------------------------------------------------------------------------
# 5. matcher and GIoU
# ---------------------------------------------------------------------------------------------
def xyxy(box):
    cx, cy, w, h = box
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def giou(a, b):
    """GIoU of two xyxy boxes, in Python floats."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def pair_cost(logits, box, label, target_box):
    """5 L1 - softmax probability of the target class - 2 GIoU."""
    exps = [math.exp(x) for x in logits]
    prob = exps[label] / sum(exps)
    l1 = sum(abs(x - y) for x, y in zip(box, target_box))
    return 5 * l1 - prob - 2 * giou(xyxy(box), xyxy(target_box))


def random_boxes(n, g):
    centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=g) * 0.4 + 0.05
    return torch.cat([centre, size], dim=1)


def test_giou_hand_values():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.5, 1.0], [2.0, 0.0, 3.0, 1.0]])
    got = generalized_box_iou(boxes, boxes)
    assert got.shape == (3, 3)
    # overlap 0.5 of union 1.5, hull = union; disjoint: iou 0, hull 3 vs union 2
    assert got[0, 1].item() == pytest.approx(1 / 3)
    assert got[0, 2].item() == pytest.approx(-1 / 3)
    assert got[1, 2].item() == pytest.approx(0 - (2.5 - 2) / 2.5)
    torch.testing.assert_close(got.diagonal(), torch.ones(3))


def test_matcher_equals_brute_force():
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)
    g = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(8):
        num_queries = [6, 5, 3][trial % 3]
        counts = [4, 0, 2, 3] if trial % 2 == 0 else [1, 4, 0]
        B, K = len(counts), 4
        logits = torch.randn(B, num_queries, K + 1, generator=g) * 2
        boxes = random_boxes(B * num_queries, g).view(B, num_queries, 4)
        targets = [
            {"labels": torch.randint(0, K, (n,), generator=g), "boxes": random_boxes(n, g)}
            for n in counts
        ]
        indices = matcher(logits, boxes, targets)
        assert len(indices) == B
        for b, (src, tgt) in enumerate(indices):
            n = counts[b]
            assert src.dtype == tgt.dtype == torch.int64
            assert len(src) == len(tgt) == min(n, num_queries)
            assert len(set(src.tolist())) == len(src) and len(set(tgt.tolist())) == len(tgt)
            labels, tboxes = targets[b]["labels"].tolist(), targets[b]["boxes"].tolist()
            cost = [
                [
                    pair_cost(logits[b, q].tolist(), boxes[b, q].tolist(), labels[t], tboxes[t])
                    for t in range(n)
                ]
                for q in range(num_queries)
            ]
            got = sum(cost[q][t] for q, t in zip(src.tolist(), tgt.tolist()))
            if n == 0:
                assert got == 0
                continue
            if n <= num_queries:  # every injection of targets into queries
                best = min(
                    sum(cost[q][t] for t, q in enumerate(qs))
                    for qs in itertools.permutations(range(num_queries), n)
                )
            else:  # more targets than queries: every injection of queries into targets
                best = min(
                    sum(cost[q][t] for q, t in enumerate(ts))
                    for ts in itertools.permutations(range(n), num_queries)
                )
            assert got == pytest.approx(best, abs=1e-4)
            cases += 1
    assert cases >= 16


def test_matcher_all_images_without_targets():
    matcher = HungarianMatcher()
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    indices = matcher(torch.randn(2, 4, 3), torch.rand(2, 4, 4) * 0.5 + 0.25, [empty, empty])
    assert [(len(s), len(t)) for s, t in indices] == [(0, 0), (0, 0)]


@pytest.mark.parametrize(
    "bad",
    [
        [0.1, 0.1, float("nan"), 0.5],
        [0.1, 0.1, float("inf"), 0.5],
        [0.5, 0.1, 0.4, 0.5],  # x2 < x1
        [0.1, 0.5, 0.4, 0.4],  # y2 < y1
    ],
)
def test_generalized_box_iou_rejects_bad_boxes_in_one_line(bad):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    for a, b in [(torch.tensor([bad]), good), (good, torch.tensor([bad]))]:
        with pytest.raises(FloatingPointError, match="non-finite or degenerate") as e:
            generalized_box_iou(a, b)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# 6. criterion
# ---------------------------------------------------------------------------------------------
class FixedMatcher(nn.Module):
    def __init__(self, indices):
        super().__init__()
        self.indices = indices

    def forward(self, logits, boxes, targets):
        return [(torch.tensor(s), torch.tensor(t)) for s, t in self.indices]


def test_criterion_hand_case():
    K, Q = 3, 4
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, Q, K + 1, generator=g) * 2
    boxes = random_boxes(2 * Q, g).view(1, 2, Q, 4)
    targets = [
        {"labels": torch.tensor([1, 2]), "boxes": random_boxes(2, g)},
        {"labels": torch.tensor([0]), "boxes": random_boxes(1, g)},
    ]
    indices = [([2, 0], [0, 1]), ([3], [0])]  # (query, target)
    criterion = SetCriterion(K, FixedMatcher(indices), eos_coef=0.1)
    losses, stats = criterion(logits, boxes, targets)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}

    # cross-entropy weighted 0.1 on "no object", divided by the summed weights
    classes = [[K] * Q, [K] * Q]
    for b, (qs, ts) in enumerate(indices):
        for q, t in zip(qs, ts):
            classes[b][q] = int(targets[b]["labels"][t])
    num, den = 0.0, 0.0
    for b in range(2):
        for q in range(Q):
            row = logits[0, b, q].tolist()
            log_z = math.log(sum(math.exp(x) for x in row))
            w = 0.1 if classes[b][q] == K else 1.0
            num += w * (log_z - row[classes[b][q]])
            den += w
    assert den == pytest.approx(3 + 5 * 0.1)
    assert losses["loss_ce"].item() == pytest.approx(num / den, rel=1e-5)

    num_boxes = 3  # all targets of the batch
    l1, gi = 0.0, 0.0
    for b, (qs, ts) in enumerate(indices):
        for q, t in zip(qs, ts):
            pb, tb = boxes[0, b, q].tolist(), targets[b]["boxes"][t].tolist()
            l1 += sum(abs(x - y) for x, y in zip(pb, tb))
            gi += 1 - giou(xyxy(pb), xyxy(tb))
    assert losses["loss_bbox"].item() == pytest.approx(l1 / num_boxes, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(gi / num_boxes, rel=1e-5)

    # statistics of the last layer
    labels = logits[0].argmax(-1)
    correct = [int(labels[b, q]) == classes[b][q] for b, (qs, _) in enumerate(indices) for q in qs]
    assert stats["class_error"] == pytest.approx(100 - 100 * sum(correct) / 3)
    card = [abs(int((labels[b] != K).sum()) - n) for b, n in enumerate([2, 1])]
    assert stats["cardinality_error"] == pytest.approx(sum(card) / 2)


def test_criterion_without_targets_clamps_num_boxes():
    K, Q = 2, 3
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, Q, K + 1, generator=g)
    boxes = random_boxes(4 * Q, g).view(2, 2, Q, 4)
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    criterion = SetCriterion(K, HungarianMatcher(), eos_coef=0.1)
    assert SetCriterion._num_boxes([empty, empty], "cpu") == 1.0
    losses, stats = criterion(logits, boxes, [empty, empty])
    names = {"loss_ce", "loss_bbox", "loss_giou"}
    assert set(losses) == names | {n + "_0" for n in names}
    for k, v in losses.items():
        assert torch.isfinite(v), k
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    # every query is "no object": the 0.1 weights cancel in the weighted mean
    expected = F.cross_entropy(logits[-1].reshape(-1, K + 1), torch.full((2 * Q,), K))
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["class_error"] == 100.0  # official DETR's accuracy() is 0 without targets


def test_criterion_num_boxes_counts_the_batch():
    one = {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    assert SetCriterion._num_boxes([one, one, one], "cpu") == 3.0
    # more targets than queries: 2 pairs matched, the sums still divided by the 3 targets
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 1, 2, 3, generator=g)
    boxes = random_boxes(2, g).view(1, 1, 2, 4)
    targets = [{"labels": torch.tensor([0, 1, 0]), "boxes": random_boxes(3, g)}]
    losses, _ = SetCriterion(2, HungarianMatcher())(logits, boxes, targets)
    ((src, tgt),) = HungarianMatcher()(logits[0], boxes[0], targets)
    assert len(src) == 2
    l1 = sum(
        (boxes[0, 0, q] - targets[0]["boxes"][t]).abs().sum().item()
        for q, t in zip(src.tolist(), tgt.tolist())
    )
    assert losses["loss_bbox"].item() == pytest.approx(l1 / 3, rel=1e-5)


def test_criterion_rematches_every_layer():
    K, Q = 3, 5
    g = torch.Generator().manual_seed(2)
    last_logits = torch.randn(2, Q, K + 1, generator=g)
    last_boxes = random_boxes(2 * Q, g).view(2, Q, 4)
    perm = torch.tensor([3, 0, 4, 1, 2])  # layer 0 = the last layer with queries permuted
    logits = torch.stack([last_logits[:, perm], last_logits])
    boxes = torch.stack([last_boxes[:, perm], last_boxes])
    targets = [
        {"labels": torch.tensor([1, 2, 0]), "boxes": random_boxes(3, g)},
        {"labels": torch.tensor([2]), "boxes": random_boxes(1, g)},
    ]
    losses, _ = SetCriterion(K, HungarianMatcher())(logits, boxes, targets)
    for name in ("loss_ce", "loss_bbox", "loss_giou"):
        assert losses[name + "_0"].item() == pytest.approx(losses[name].item(), rel=1e-5)
    # and the match is not the identity: reusing the last layer's indices would differ
    last_indices = HungarianMatcher()(last_logits, last_boxes, targets)
    fixed = FixedMatcher([(s.tolist(), t.tolist()) for s, t in last_indices])
    reused = SetCriterion(K, fixed)(logits, boxes, targets)[0]
    assert reused["loss_bbox_0"].item() != pytest.approx(losses["loss_bbox"].item(), rel=1e-3)


def test_model_returns_18_weighted_losses_and_logs_statistics():
    model = tiny_detr(dec_layers=6).train()
    batch = image_batch([(40, 56), (48, 40)])
    batch[1]["instances"] = batch[1]["instances"][:0]  # an image without targets
    with EventStorage(0) as storage:
        losses = model(batch)
    names = ["loss_ce", "loss_bbox", "loss_giou"]
    assert set(losses) == set(names) | {f"{n}_{i}" for n in names for i in range(5)}
    assert len(losses) == 18
    # the same forward by hand, then the criterion unweighted
    images = model.preprocess_image(batch)
    logits, boxes = model.predict(images)
    assert logits.shape == (6, 2, 5, 4) and boxes.shape == (6, 2, 5, 4)
    targets = model.prepare_targets(batch, images.image_sizes)
    raw, stats = model.criterion(logits, boxes, targets)
    for key, value in losses.items():
        weight = LOSS_WEIGHTS["_".join(key.split("_")[:2])]  # loss_bbox_3 -> loss_bbox
        torch.testing.assert_close(value, raw[key] * weight, msg=key)
    assert losses["loss_bbox"].item() > 0 and losses["loss_giou"].item() > 0
    latest = storage.latest()
    assert latest["class_error"][0] == pytest.approx(stats["class_error"])
    assert latest["cardinality_error"][0] == pytest.approx(stats["cardinality_error"])
    # cardinality error by hand: |#queries not predicting "no object" - #targets|, averaged
    pred = logits[-1].argmax(-1)
    card = [abs(int((pred[b] != 3).sum()) - n) for b, n in enumerate([1, 0])]
    assert stats["cardinality_error"] == pytest.approx(sum(card) / 2)
    # targets are gt xyxy / [W, H, W, H] as cxcywh, by the unpadded size
    gt = batch[0]["instances"].gt_boxes.tensor[0] / torch.tensor([56, 40, 56, 40])
    cxcywh = torch.stack([(gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2, gt[2] - gt[0], gt[3] - gt[1]])
    torch.testing.assert_close(targets[0]["boxes"][0], cxcywh)
    # outside a trainer (no EventStorage) the losses still come back
    assert set(model(batch)) == set(losses)
    model.aux_loss = False
    assert set(model(batch)) == set(names)


# ---------------------------------------------------------------------------------------------
# 7. inference
# ---------------------------------------------------------------------------------------------
def test_inference_keeps_every_query_in_order():
    model = tiny_detr(num_queries=7).eval()
    with torch.no_grad():  # large boxes near the right/top edges, so that clipping matters
        model.bbox_embed.layers[2].bias.copy_(torch.tensor([2.0, -2.0, 2.0, 2.0]))
    batch = image_batch([(40, 56), (64, 48)], with_instances=False)
    batch[0].update(height=80, width=112)
    batch[1].update(height=32, width=24)
    with torch.no_grad():
        results = model(batch)
        images = model.preprocess_image(batch)
        assert images.tensor.shape[-2:] == (64, 56)  # padded to the batch max, no divisibility
        logits, boxes = model.predict(images)
    clipped_any = False
    for i, result in enumerate(results):
        inst = result["instances"]
        H, W = batch[i]["height"], batch[i]["width"]
        assert inst.image_size == (H, W)
        assert len(inst) == 7
        prob = logits[-1, i].softmax(-1)[:, :-1]
        scores, labels = prob.max(-1)
        torch.testing.assert_close(inst.scores, scores)
        assert torch.equal(inst.pred_classes, labels)
        cx, cy, w, h = boxes[-1, i].unbind(-1)
        raw = torch.stack(
            [(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], 1
        )
        limits = torch.tensor([W, H, W, H], dtype=raw.dtype)
        expected = torch.minimum(raw.clamp(min=0), limits)
        clipped_any |= not torch.allclose(raw, expected)
        torch.testing.assert_close(inst.pred_boxes.tensor, expected)
    assert clipped_any
    # padding (image 0: 40 x 56 in a 64 x 56 batch) leaves its valid cells' encodings unchanged
    mask = model.padding_mask(images, (8, 7))
    assert (~mask[0]).sum().item() == 5 * 7 and not mask[0, :5].any()
    pos = model.position_encoding(mask)
    alone = model.position_encoding(torch.zeros(1, 5, 7, dtype=torch.bool))
    torch.testing.assert_close(pos[:1, :, :5], alone, atol=1e-6, rtol=0)
    # without height / width: the input size
    for item in batch:
        del item["height"], item["width"]
    with torch.no_grad():
        results = model(batch)
    assert [r["instances"].image_size for r in results] == [(40, 56), (64, 48)]


# ---------------------------------------------------------------------------------------------
# 8. losses fall, with and without iRPE
# ---------------------------------------------------------------------------------------------
def shapes_batch(n=2, size=64, seed=0):
    """Bright rectangles of 3 classes (one colour channel each) on a dark background."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(n):
        image = torch.full((3, size, size), 20.0)
        boxes, classes = [], []
        for c in range(2):
            cls = (i + c) % 3
            x0, y0 = torch.randint(0, size - 28, (2,), generator=g).tolist()
            w, h = torch.randint(14, 28, (2,), generator=g).tolist()
            image[cls, y0 : y0 + h, x0 : x0 + w] = 230.0
            boxes.append([x0, y0, x0 + w, y0 + h])
            classes.append(cls)
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(classes)
        batch.append({"image": image, "instances": inst, "height": size, "width": size})
    return batch


@pytest.mark.parametrize("enc_rpe", [None, "rpe-2.0-product-ctx-1-k"])
def test_tiny_detr_losses_fall(enc_rpe, repo_root):
    opts = [] if enc_rpe is None else [f"model.transformer.enc_rpe={enc_rpe}"]
    cfg = load_config(os.path.join(repo_root, "configs/Shapes/detr_tiny.py"), opts)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    tables = [p for n, p in model.named_parameters() if "lookup_table" in n]
    assert len(tables) == (0 if enc_rpe is None else 2)
    initial = [t.detach().clone() for t in tables]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    totals, last = train_steps(model, shapes_batch(), 10, optimizer)
    assert_loss_falls(totals, 0.75)
    assert len(last) == 6  # 2 decoder layers
    for t, t0 in zip(tables, initial):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
        assert not torch.equal(t.detach(), t0)


# ---------------------------------------------------------------------------------------------
# 9. yacs
# ---------------------------------------------------------------------------------------------
def _tiny_yacs_detr(layers=2):
    """A yacs DETR on a ResNet-18 (res5 only), 32 channels, 4 heads, ``layers`` encoder and
    decoder layers."""
    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "DETR"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.DETR.HIDDEN_DIM = 32
    cfg.MODEL.DETR.NHEADS = 4
    cfg.MODEL.DETR.ENC_LAYERS = cfg.MODEL.DETR.DEC_LAYERS = layers
    cfg.MODEL.DETR.DIM_FEEDFORWARD = 64
    return cfg


@pytest.mark.parametrize("enc_rpe", ["", "rpe-2.0-product-ctx-1-k"])
def test_yacs_builds_detr(enc_rpe):
    cfg = _tiny_yacs_detr()
    cfg.MODEL.DETR.NUM_CLASSES = 3
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 4
    cfg.MODEL.DETR.ENC_RPE = enc_rpe
    model = build_model(cfg)
    assert isinstance(model, DETR)
    rpe = {k: tuple(v.shape) for k, v in model.named_parameters() if "lookup_table" in k}
    if enc_rpe:
        assert str(model.transformer.enc_rpe) == enc_rpe
        assert rpe == {
            f"transformer.encoder.layers.{i}.self_attn.rpe_k.lookup_table_weight": (1, 8, 81)
            for i in range(2)
        }
    else:
        assert model.transformer.enc_rpe is None and rpe == {}
    assert model.class_embed.out_features == 4 and model.query_embed.num_embeddings == 4
    assert model.loss_weights == LOSS_WEIGHTS and model.criterion.eos_coef == 0.1
    assert model.transformer.encoder.layers[0].self_attn.dropout == 0.1
    batch = image_batch([(64, 96), (96, 64)])
    with EventStorage(0):
        losses = model(batch)  # train mode, dropout 0.1 (SDPA's dropout)
    assert len(losses) == 6 and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255}])
    assert len(out[0]["instances"]) == 4
    cfg.MODEL.DETR.PRE_NORM = True
    with pytest.raises(ValueError, match="PRE_NORM"):
        build_model(cfg)


def test_yacs_detr_backbone_lr_multiplier():
    """SOLVER.BACKBONE_MULTIPLIER scales the backbone's lr of a yacs DETR (official DETR's
    lr_backbone); other meta-architectures keep detectron2's groups."""
    from fpt.config import RunConfig, add_training_config

    cfg = _tiny_yacs_detr(layers=1)
    add_training_config(cfg)
    cfg.SOLVER.BASE_LR, cfg.SOLVER.BACKBONE_MULTIPLIER = 1e-3, 0.25
    model = build_model(cfg)
    names = {p: n for n, p in model.named_parameters()}
    lrs = {
        names[p]: g["lr"]
        for g in RunConfig(cfg).build_optimizer(model).param_groups
        for p in g["params"]
    }
    assert lrs["backbone.res5.0.conv1.weight"] == pytest.approx(2.5e-4)
    assert lrs["transformer.encoder.layers.0.linear1.weight"] == pytest.approx(1e-3)
    assert lrs["class_embed.weight"] == pytest.approx(1e-3)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # the key is DETR's only
    groups = RunConfig(cfg).build_optimizer(model).param_groups
    assert {g["lr"] for g in groups} == {1e-3}


@pytest.mark.parametrize("enc_rpe", [None, "rpe-2.0-product-ctx-1-k"])
def test_transformer_activation_checkpointing_keeps_gradients(enc_rpe):
    """use_checkpoint recomputes each layer in the backward pass: same outputs and gradients
    (dropout included: the recomputation draws the same masks), within 1e-6."""
    torch.manual_seed(0)
    plain = Transformer(32, 4, 2, 2, dim_feedforward=48, dropout=0.1, enc_rpe=enc_rpe)
    checkpointed = Transformer(
        32, 4, 2, 2, dim_feedforward=48, dropout=0.1, enc_rpe=enc_rpe, use_checkpoint=True
    )
    checkpointed.load_state_dict(plain.state_dict())
    src, pos = torch.randn(2, 32, 5, 6), torch.randn(2, 32, 5, 6)
    mask = torch.zeros(2, 5, 6, dtype=torch.bool)
    mask[1, :, 4:] = True
    query = torch.randn(7, 32)
    results, calls = [], []
    for model in (plain, checkpointed):
        layers = (model.encoder.layers[0], model.decoder.layers[1])
        count = [0]
        for layer in layers:  # count the calls of forward (recomputation runs no module hooks)

            def counted(*args, forward=layer.forward, **kwargs):
                count[0] += 1
                return forward(*args, **kwargs)

            layer.forward = counted
        torch.manual_seed(1)
        hs, memory = model(src, mask, query, pos)
        (hs.square().sum() + memory.sum()).backward()
        results.append((hs, {n: p.grad for n, p in model.named_parameters()}))
        calls.append(count[0])
    assert calls == [2, 4]  # checkpointed layers run again in the backward pass
    (hs0, grads0), (hs1, grads1) = results
    torch.testing.assert_close(hs1, hs0, rtol=0, atol=1e-6)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=0, atol=1e-6, msg=name)
    with torch.no_grad():  # inference: no checkpointing, same outputs
        torch.testing.assert_close(
            checkpointed.eval()(src, mask, query, pos)[0], plain.eval()(src, mask, query, pos)[0]
        )


# ---------------------------------------------------------------------------------------------
# 10. COCO configs: schedule, clipping, optimizer groups
# ---------------------------------------------------------------------------------------------
CONFIGS = {  # file: (enc_rpe, max_iter, drop)
    "detr_r50_150ep": (None, 1_108_950, 739_300),
    "detr_r50_300ep": (None, 2_217_900, 1_478_600),
    "detr_r50_500ep": (None, 3_696_500, 2_957_200),
    "detr_r50_irpe_k_150ep": ("rpe-2.0-product-ctx-1-k", 1_108_950, 739_300),
    "detr_r50_irpe_k_300ep": ("rpe-2.0-product-ctx-1-k", 2_217_900, 1_478_600),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_coco_detr_config(name, meta_models):
    enc_rpe, max_iter, drop = CONFIGS[name]
    cfg = load_config(os.path.join(COCO_DETR, name + ".py"))
    assert cfg.model.transformer.enc_rpe == enc_rpe
    assert cfg.train.max_iter == max_iter
    assert list(cfg.lr_multiplier.milestones) == [drop]
    sched = instantiate(cfg.lr_multiplier)  # called with iteration / max_iter (LRMultiplier)
    assert sched._num_updates == max_iter and sched._milestones == [drop]
    # fvcore adds 1e-6 to the fraction: beyond 1e6 updates the drop comes 1-3 iterations early
    assert sched(0.0) == 1.0 and sched((drop - 4) / max_iter) == 1.0
    assert sched(drop / max_iter) == pytest.approx(0.1)
    assert sched((max_iter - 1) / max_iter) == pytest.approx(0.1)
    assert dict(cfg.train.clip_gradients) == dict(
        enabled=True, clip_type="norm", clip_value=0.1, norm_type=2.0
    )
    assert cfg.train.amp.enabled is False
    assert cfg.train.output_dir.endswith(name)
    assert cfg.model.num_queries == 100 and cfg.model.criterion.eos_coef == 0.1
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.dataloader.train.aspect_ratio_grouping is False  # as official DETR

    model = meta_models["detr_r50_irpe_k_300ep" if enc_rpe else "detr_r50_300ep"]
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    names = {p: n for n, p in model.named_parameters()}
    seen = {}
    for group in optimizer.param_groups:
        assert tuple(group["betas"]) == (0.9, 0.999)
        for p in group["params"]:
            assert p not in seen
            seen[p] = (group["lr"], group["weight_decay"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {names[p] for p in seen} == trainable
    assert "backbone.stem.conv1.weight" not in trainable  # freeze_at 2
    assert "backbone.res2.0.conv1.weight" not in trainable
    assert "backbone.res3.0.conv1.weight" in trainable
    for p, (lr, wd) in seen.items():
        name = names[p]
        expected_lr = 1e-5 if name.startswith("backbone.") else 1e-4
        assert lr == pytest.approx(expected_lr, rel=1e-9), name
        assert wd == pytest.approx(1e-4, rel=1e-9), name  # norms, biases, tables too
    checked = {
        "transformer.encoder.layers.0.norm1.weight",
        "transformer.decoder.norm.bias",
        "class_embed.bias",
        "input_proj.bias",
    }
    if enc_rpe:
        checked.add("transformer.encoder.layers.5.self_attn.rpe_k.lookup_table_weight")
    assert checked <= {names[p] for p in seen}
