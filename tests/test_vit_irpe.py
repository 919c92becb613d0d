"""iRPE in the ViTDet attention (``rpe=`` on Attention / Block / ViT), against a naive per-head
reference written from the iRPE formulas (spec: docs/irpe_detr.md, section 4)."""

import logging
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fpt.layers.irpe as irpe
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from fpt.layers import decomposed_rel_pos_bias
from fpt.modeling.simple_pyramid import add_vitdet_config
from fpt.modeling.vit import Attention, Block, ViT, get_vit_lr_decay_rate, set_vit_attention_impl

# q/k specs: every method, bias and ctx, q / k / qk, shared and per-head
QK_SPECS = [
    "rpe-2.0-product-ctx-1-k",
    "rpe-1.9-product-bias-0-qk",
    "rpe-2.0-euc-ctx-0-qk",
    "rpe-2.5-quant-bias-1-q",
    "rpe-1.9-cross-ctx-0-k",
    "rpe-2.0-cross-bias-1-qk",
]
V_SPECS = ["rpe-2.0-product-ctx-0-qkv", "rpe-1.9-euc-ctx-1-v", "rpe-2.0-cross-ctx-1-kv"]
IMPLS = {"mask": "sdpa_mask", "explicit": "explicit"}


def tiny_vit(rpe=None, **kwargs):
    """Block 0 windowed (3 x 3), block 1 global; 40 x 56 inputs give a 5 x 7 token grid."""
    args = dict(
        img_size=40,
        patch_size=8,
        embed_dim=24,
        depth=2,
        num_heads=2,
        window_size=3,
        window_block_indexes=[0],
        use_rel_pos=True,
        rel_pos_zero_init=False,
        pretrain_img_size=40,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        rpe=rpe,
    )
    args.update(kwargs)
    torch.manual_seed(0)
    return ViT(**args)


def randomize_tables(module, std=0.5):
    g = torch.Generator().manual_seed(1)
    tables = [p for n, p in module.named_parameters() if "lookup_table" in n]
    assert tables
    with torch.no_grad():
        for p in tables:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def outputs_and_grads(module, x, impl):
    set_vit_attention_impl(module, IMPLS[impl])
    out = module(x)
    out = out["last_feat"] if isinstance(out, dict) else out
    return out, torch.autograd.grad(out.square().sum(), [x] + list(module.parameters()))


def irpe_tables(module, head):
    """(mode, method, ratio, table of this head) of each table of an rpe_{q,k,v} module."""
    if module is None:
        return []
    parts = [module.rp_rows, module.rp_cols] if isinstance(module, irpe.IRPECross) else [module]
    out = []
    for m in parts:
        table = m.lookup_table_bias if m.mode == "bias" else m.lookup_table_weight
        out.append((m.mode, m.method, m.ratio, table[0 if m.shared_head else head]))
    return out


def naive_attention(attn, x):
    """softmax(s q k^T + rel-pos + iRPE k/q terms) v + iRPE v term, one head at a time, with the
    iRPE terms written from their definitions (b(i, j): bucket of query i minus key j)."""
    B, H, W, C = x.shape
    nh, hd = attn.num_heads, C // attn.num_heads
    s = hd**-0.5
    qkv = attn.qkv(x).reshape(B, H * W, 3, nh, hd)
    outs = []
    for h in range(nh):
        q, k, v = qkv[:, :, 0, h], qkv[:, :, 1, h], qkv[:, :, 2, h]  # (B, L, hd)
        logits = s * q @ k.transpose(1, 2)
        if attn.use_rel_pos:
            logits = logits + decomposed_rel_pos_bias(
                q, attn.rel_pos_h, attn.rel_pos_w, (H, W), (H, W)
            )
        for mode, method, ratio, t in irpe_tables(attn.rpe_k, h):
            ids = irpe.bucket_ids(H, W, method, ratio)
            if mode == "bias":
                logits = logits + t[ids]
            else:  # s q_i . Wk[:, b(i, j)]
                logits = logits + torch.einsum("bid,dij->bij", s * q, t[:, ids])
        for mode, method, ratio, t in irpe_tables(attn.rpe_q, h):
            ids = irpe.bucket_ids(H, W, method, ratio)
            if mode == "bias":
                logits = logits + t[ids.T]
            else:  # s k_j . Wq[:, b(j, i)]
                logits = logits + torch.einsum("bjd,dji->bij", s * k, t[:, ids])
        a = logits.softmax(-1)
        out = a @ v
        for _, method, ratio, t in irpe_tables(attn.rpe_v, h):
            ids = irpe.bucket_ids(H, W, method, ratio)
            out = out + torch.einsum("bij,ijd->bid", a, t[ids])  # sum_j a_ij Wv[b(i, j)]
        outs.append(out)
    return attn.proj(torch.cat(outs, dim=-1).reshape(B, H, W, C))


def naive_block(blk, x):
    """A :class:`Block` with window attention written out: zero-pad, attend per window, crop."""
    normed = blk.norm1(x)
    ws = blk.window_size
    if ws == 0:
        attn_out = naive_attention(blk.attn, normed)
    else:
        H, W = x.shape[1:3]
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        normed = F.pad(normed, (0, 0, 0, Wp - W, 0, Hp - H))
        attn_out = torch.zeros_like(normed)
        for i in range(0, Hp, ws):
            for j in range(0, Wp, ws):
                window = normed[:, i : i + ws, j : j + ws]
                attn_out[:, i : i + ws, j : j + ws] = naive_attention(blk.attn, window)
        attn_out = attn_out[:, :H, :W]
    y = x + attn_out
    return y + blk.mlp(blk.norm2(y))


@pytest.mark.parametrize("impl", ["mask", "explicit"])
def test_rpe_at_init_equals_no_rpe(impl):
    plain = tiny_vit(attn_impl=IMPLS[impl]).double()
    with_rpe = tiny_vit("rpe-2.0-product-ctx-0-qkv", attn_impl=IMPLS[impl]).double()
    # a checkpoint without iRPE loads unchanged, reporting only the tables as missing
    result = with_rpe.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == [
        f"blocks.{i}.attn.rpe_{c}.lookup_table_weight" for i in range(2) for c in "kqv"
    ]
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    torch.testing.assert_close(with_rpe(x)["last_feat"], plain(x)["last_feat"])
    # same seed: the zero tables draw nothing, so the other weights are the same too
    fresh = tiny_vit("rpe-2.0-product-ctx-0-qkv").double()
    torch.testing.assert_close(fresh(x)["last_feat"], plain(x)["last_feat"])


@pytest.mark.parametrize("use_rel_pos", [True, False])
@pytest.mark.parametrize("spec", QK_SPECS)
def test_mask_path_equals_explicit_with_random_tables(spec, use_rel_pos):
    vit = randomize_tables(tiny_vit(spec, use_rel_pos=use_rel_pos).double())
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64, requires_grad=True)
    fused, g_fused = outputs_and_grads(vit, x, "mask")
    explicit, g_explicit = outputs_and_grads(vit, x, "explicit")
    plain, _ = outputs_and_grads(randomize_tables(vit, std=0.0), x, "explicit")
    # the tables matter far beyond fp64's tolerance (1e-7; small: the qkv init std is 0.02)
    assert (explicit - plain).abs().max() > 1e-5
    torch.testing.assert_close(fused, explicit)
    for a, b in zip(g_fused, g_explicit):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("spec", V_SPECS)
def test_v_specs_fall_back_to_explicit_on_mask_path(spec, monkeypatch):
    vit = randomize_tables(tiny_vit(spec).double())
    x = torch.randn(1, 3, 40, 56, dtype=torch.float64, requires_grad=True)
    explicit, g_explicit = outputs_and_grads(vit, x, "explicit")

    def no_sdpa(*args, **kwargs):
        raise AssertionError("SDPA called although the attention has a v table")

    monkeypatch.setattr(F, "scaled_dot_product_attention", no_sdpa)
    fused, g_fused = outputs_and_grads(vit, x, "mask")
    torch.testing.assert_close(fused, explicit)
    for a, b in zip(g_fused, g_explicit):
        torch.testing.assert_close(a, b)


def test_v_fallback_logged_once_per_attention_at_construction(caplog):
    caplog.set_level(logging.INFO, logger="fpt.modeling.vit")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("fpt.modeling.vit")
    logger.addHandler(handler)
    try:
        vit = tiny_vit("rpe-2.0-product-ctx-0-kv")
        assert len(records) == 2  # one per block
        assert all(r.levelno == logging.INFO for r in records)
        assert "runs the explicit path" in records[0].getMessage()
        vit(torch.randn(1, 3, 40, 56))
        tiny_vit("rpe-2.0-product-ctx-0-kv", attn_impl="explicit")
        tiny_vit("rpe-2.0-product-ctx-0-qk")
        assert len(records) == 2
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("impl", ["mask", "explicit"])
@pytest.mark.parametrize("window_size", [3, 0])
@pytest.mark.parametrize("spec", ["rpe-2.0-product-ctx-0-qkv", "rpe-1.9-cross-bias-0-qk",
                                  "rpe-2.0-euc-ctx-1-k", "rpe-3.0-quant-bias-1-k"])  # fmt: skip
def test_block_matches_naive_irpe_attention(spec, window_size, impl):
    """Windows: buckets of the 3 x 3 window (padded tokens unmasked); global: the 5 x 7 grid."""
    torch.manual_seed(0)
    blk = Block(
        24,
        2,
        window_size=window_size,
        use_rel_pos=True,
        rel_pos_zero_init=False,
        input_size=(5, 7),
        attn_impl=IMPLS[impl],
        rpe=spec,
    ).double()
    randomize_tables(blk)
    x = torch.randn(2, 5, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(blk(x), naive_block(blk, x))


def test_bucket_grids_are_windows_and_runtime_grids(monkeypatch):
    grids = []

    def recording_bucket_ids(height, width, *args, **kwargs):
        grids.append((height, width))
        return bucket_ids(height, width, *args, **kwargs)

    bucket_ids = irpe.bucket_ids
    monkeypatch.setattr(irpe, "bucket_ids", recording_bucket_ids)
    vit = tiny_vit("rpe-2.0-product-ctx-1-qk")  # window block 0 (ws 3), global block 1
    vit(torch.randn(1, 3, 40, 56))  # 5 x 7 tokens
    assert grids == [(3, 3), (3, 3), (5, 7), (5, 7)]  # k then q table, per block
    grids.clear()
    vit(torch.randn(1, 3, 64, 32))  # 8 x 4 tokens: no interpolation, the grid as it comes
    assert grids == [(3, 3), (3, 3), (8, 4), (8, 4)]


def test_tables_get_gradients_and_their_block_lr_decay():
    vit = tiny_vit("rpe-2.0-cross-ctx-0-qkv", depth=3, window_block_indexes=[0, 2])
    vit(torch.randn(2, 3, 40, 56))["last_feat"].square().sum().backward()
    tables = {n: p for n, p in vit.named_parameters() if "lookup_table" in n}
    assert len(tables) == 3 * 3 * 2  # blocks x (q, k, v) x (rows, cols)
    for name, p in tables.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        block = int(name.split(".")[1])
        rate = get_vit_lr_decay_rate("backbone.net." + name, lr_decay_rate=0.5, num_layers=3)
        assert rate == 0.5 ** (3 - block), name
        qkv_rate = get_vit_lr_decay_rate(
            f"backbone.net.blocks.{block}.attn.qkv.weight", lr_decay_rate=0.5, num_layers=3
        )
        assert rate == qkv_rate


def test_state_dict_keys_and_shapes_per_block():
    vit = tiny_vit("rpe-2.0-product-ctx-1-k")
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items() if "rpe" in k}
    assert shapes == {f"blocks.{i}.attn.rpe_k.lookup_table_weight": (1, 12, 81) for i in range(2)}
    assert vit.blocks[0].attn.rpe_q is None and vit.blocks[0].attn.rpe_v is None
    a, b = (blk.attn.rpe_k.lookup_table_weight for blk in vit.blocks)
    assert a is not b and a.data_ptr() != b.data_ptr()  # each block its own tables

    vit = tiny_vit("rpe-1.9-cross-bias-0-qk")
    shapes = {k: tuple(v.shape) for k, v in vit.blocks[1].state_dict().items() if "rpe" in k}
    assert shapes == {
        f"attn.rpe_{c}.rp_{d}.lookup_table_bias": (2, 7) for c in "qk" for d in ("rows", "cols")
    }
    assert not any("rpe" in k for k in tiny_vit().state_dict())


def test_folded_sdpa_rejects_rpe():
    match = (
        r"^iRPE rpe-2\.0-product-ctx-1-k cannot be used with attn_impl='sdpa_folded': folding "
        r"needs per-token features, .* \(query, key\) bucket; use attn_impl='sdpa_mask' or "
        r"'explicit'$"
    )
    spec = "rpe-2.0-product-ctx-1-k"
    with pytest.raises(ValueError, match=match):
        Attention(24, 2, attn_impl="sdpa_folded", rpe=spec)
    with pytest.raises(ValueError, match=match):
        Attention(24, 2, use_rel_pos=True, input_size=(3, 3), attn_impl="sdpa_folded", rpe=spec)
    with pytest.raises(ValueError, match=match):
        tiny_vit(spec, attn_impl="sdpa_folded")
    vit = tiny_vit(spec)
    with pytest.raises(ValueError, match=match):
        set_vit_attention_impl(vit, "sdpa_folded")
    assert all(blk.attn.attn_impl == "sdpa_mask" for blk in vit.blocks)  # nothing changed
    explicit = tiny_vit(spec, attn_impl="explicit")
    with pytest.raises(ValueError, match=match):
        set_vit_attention_impl(explicit, "sdpa_folded")
    assert all(blk.attn.attn_impl == "explicit" for blk in explicit.blocks)
    set_vit_attention_impl(explicit, "sdpa_mask")
    set_vit_attention_impl(tiny_vit(), "sdpa_folded")  # no iRPE: folded is fine


def test_blocked_attention_rejects_rpe():
    spec = "rpe-2.0-product-ctx-1-k"
    match = (
        r"^iRPE rpe-2\.0-product-ctx-1-k cannot be used with attn_impl='blocked': blocking adds "
        r"only the decomposed rel-pos terms, .* use attn_impl='sdpa_mask' or 'explicit'$"
    )
    with pytest.raises(ValueError, match=match):
        Attention(24, 2, use_rel_pos=True, input_size=(3, 3), attn_impl="blocked", rpe=spec)
    vit = tiny_vit(spec)
    with pytest.raises(ValueError, match=match):
        set_vit_attention_impl(vit, "blocked")
    assert all(blk.attn.attn_impl == "sdpa_mask" for blk in vit.blocks)  # nothing changed


@pytest.mark.parametrize(
    "spec,field",
    [("rpe-2.0-product-ctx-1", "expected 6 fields"), ("rpe-2.0-product-bias-1-v", "rpe_on"),
     ("", "use None"), ("rpe-2.0-product-ctx-1-kx", "rpe_on")],
)  # fmt: skip
def test_bad_spec_raises_at_construction(spec, field):
    for build in (partial(Attention, 24, 2), partial(Block, 24, 2), tiny_vit):
        with pytest.raises(ValueError, match=field) as info:
            build(rpe=spec)
        assert "\n" not in str(info.value)


def test_extra_repr_mentions_rpe():
    assert "rpe='rpe-2.0-product-ctx-1-k'" in repr(tiny_vit("rpe-2.0-product-ctx-1-k").blocks[0])
    assert "rpe=None" in Attention(24, 2).extra_repr()


def test_mask_path_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    attn = Attention(24, 2, rpe="rpe-2.0-product-ctx-0-qk")
    randomize_tables(attn, std=0.2)
    x = torch.randn(2, 4, 5, 24)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_yacs_backbone_builds_with_rpe():
    cfg = get_cfg()
    add_vitdet_config(cfg)
    assert cfg.MODEL.VIT.RPE is None
    cfg.MODEL.BACKBONE.NAME = "build_vitdet_backbone"
    cfg.MODEL.VIT.update(
        IMG_SIZE=32, EMBED_DIM=16, DEPTH=2, NUM_HEADS=2, WINDOW_SIZE=2, WINDOW_BLOCK_INDEXES=[0],
        OUT_CHANNELS=8, SQUARE_PAD=32,
    )  # fmt: skip
    plain = build_backbone(cfg, ShapeSpec(channels=3))
    assert all(blk.attn.rpe_k is None for blk in plain.net.blocks)
    cfg.merge_from_list(["MODEL.VIT.RPE", "rpe-2.0-product-ctx-1-k"])
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert [blk.attn.rpe_k.num_buckets for blk in backbone.net.blocks] == [81, 81]
    assert "p6" in backbone(torch.randn(1, 3, 32, 32))
    cfg.merge_from_list(["MODEL.VIT.RPE", "None"])
    assert build_backbone(cfg, ShapeSpec(channels=3)).net.blocks[0].attn.rpe is None
    cfg.MODEL.VIT.RPE = "rpe-2.0-product"
    with pytest.raises(ValueError, match="expected 6 fields"):
        build_backbone(cfg, ShapeSpec(channels=3))
