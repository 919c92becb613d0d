"""ViT backbone pieces of ViTDet, checked against naive formulas."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import detectron2.layers.batch_norm

from fpt.layers import (
    DropPath,
    LayerNorm,
    add_decomposed_rel_pos,
    decomposed_rel_pos_bias,
    get_abs_pos,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from fpt.layers.rel_pos import fold_decomposed_rel_pos
from fpt.modeling.vit import (
    Attention,
    Block,
    ResBottleneckBlock,
    ViT,
    auto_attn_impl,
    set_vit_attention_impl,
)


def tiny_vit(**kwargs):
    args = dict(
        img_size=64,
        patch_size=8,
        embed_dim=48,
        depth=4,
        num_heads=3,
        window_size=3,
        window_block_indexes=[0, 2],
        residual_block_indexes=[1],
        use_rel_pos=True,
        rel_pos_zero_init=False,
        pretrain_img_size=48,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    args.update(kwargs)
    torch.manual_seed(0)
    return ViT(**args)


@pytest.mark.parametrize("hw", [(7, 10), (6, 6), (5, 9)])
def test_window_partition_pads_and_roundtrips(hw):
    x = torch.randn(2, *hw, 4)
    windows, (Hp, Wp) = window_partition(x, 3)
    assert (Hp, Wp) == (math.ceil(hw[0] / 3) * 3, math.ceil(hw[1] / 3) * 3)
    assert windows.shape == (2 * (Hp // 3) * (Wp // 3), 3, 3, 4)
    # window (b, i, j) holds the zero-padded tokens [3i:3i+3, 3j:3j+3]
    padded = F.pad(x, (0, 0, 0, Wp - hw[1], 0, Hp - hw[0]))
    nw = Wp // 3
    for b in range(2):
        for i in range(Hp // 3):
            for j in range(nw):
                w = windows[b * (Hp // 3) * nw + i * nw + j]
                assert torch.equal(w, padded[b, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3])
    assert torch.equal(window_unpartition(windows, 3, (Hp, Wp), hw), x)


def naive_linear_resize(table, length):
    """F.interpolate(mode="linear", align_corners=False) written out, along dim 0."""
    L = table.shape[0]
    out = []
    for i in range(length):
        src = max((i + 0.5) * L / length - 0.5, 0.0)
        i0 = min(int(math.floor(src)), L - 1)
        i1 = min(i0 + 1, L - 1)
        lam = src - i0
        out.append((1 - lam) * table[i0] + lam * table[i1])
    return torch.stack(out)


@pytest.mark.parametrize("q_size,k_size,table_len", [(4, 4, 7), (4, 4, 5), (6, 6, 7), (3, 3, 9)])
def test_get_rel_pos_gathers_and_interpolates(q_size, k_size, table_len):
    table = torch.randn(table_len, 5, dtype=torch.float64)
    R = get_rel_pos(q_size, k_size, table)
    full = table if table_len == 2 * q_size - 1 else naive_linear_resize(table, 2 * q_size - 1)
    for i in range(q_size):
        for j in range(k_size):
            torch.testing.assert_close(R[i, j], full[i - j + k_size - 1])


def test_decomposed_rel_pos_bias_matches_naive_sum():
    torch.manual_seed(0)
    qh, qw, C = 3, 4, 6
    q = torch.randn(2, qh * qw, C, dtype=torch.float64)
    rh, rw = torch.randn(2 * qh - 1, C, dtype=torch.float64), torch.randn(
        2 * qw - 1, C, dtype=torch.float64
    )
    bias = decomposed_rel_pos_bias(q, rh, rw, (qh, qw), (qh, qw))
    naive = torch.zeros(2, qh * qw, qh * qw, dtype=torch.float64)
    for b in range(2):
        for i in range(qh):
            for j in range(qw):
                for k in range(qh):
                    for l in range(qw):
                        qv = q[b, i * qw + j]
                        naive[b, i * qw + j, k * qw + l] = (
                            qv @ rh[i - k + qh - 1] + qv @ rw[j - l + qw - 1]
                        )
    torch.testing.assert_close(bias, naive)
    logits = torch.randn(2, qh * qw, qh * qw, dtype=torch.float64)
    added = add_decomposed_rel_pos(logits, q, rh, rw, (qh, qw), (qh, qw))
    torch.testing.assert_close(added, logits + naive)


def test_get_abs_pos_drops_cls_and_resizes():
    pos = torch.randn(1, 1 + 16, 8)
    same = get_abs_pos(pos, True, (4, 4))
    assert torch.equal(same, pos[:, 1:].reshape(1, 4, 4, 8))
    resized = get_abs_pos(pos, True, (6, 10))
    assert resized.shape == (1, 6, 10, 8)
    # a constant embedding stays constant under bicubic resizing
    const = torch.full((1, 17, 8), 0.5)
    torch.testing.assert_close(get_abs_pos(const, True, (5, 7)), torch.full((1, 5, 7, 8), 0.5))
    with pytest.raises(ValueError, match="square"):
        get_abs_pos(torch.randn(1, 15, 8), True, (4, 4))


def naive_attention(attn, x):
    """softmax(q k^T / sqrt(d) + rel-pos bias) v with explicit loops over heads."""
    B, H, W, C = x.shape
    nh, hd = attn.num_heads, C // attn.num_heads
    qkv = attn.qkv(x).reshape(B, H * W, 3, nh, hd)
    outs = []
    for h in range(nh):
        q, k, v = qkv[:, :, 0, h], qkv[:, :, 1, h], qkv[:, :, 2, h]
        logits = q @ k.transpose(1, 2) / math.sqrt(hd)
        if attn.use_rel_pos:
            logits = logits + decomposed_rel_pos_bias(
                q, attn.rel_pos_h, attn.rel_pos_w, (H, W), (H, W)
            )
        outs.append(logits.softmax(-1) @ v)
    return attn.proj(torch.cat(outs, dim=-1).reshape(B, H, W, C))


IMPLS = {
    "folded": "sdpa_folded",
    "mask": "sdpa_mask",
    "blocked": "blocked",
    "auto": "auto",
    "explicit": "explicit",
}


def attention_outputs_and_grads(module, x, impl):
    set_vit_attention_impl(module, IMPLS[impl])
    out = module(x)
    out = out["last_feat"] if isinstance(out, dict) else out
    return out, torch.autograd.grad(out.square().sum(), [x] + list(module.parameters()))


@pytest.mark.parametrize("use_rel_pos", [True, False])
@pytest.mark.parametrize("impl", ["folded", "mask", "blocked"])
def test_fused_attention_matches_explicit(use_rel_pos, impl):
    torch.manual_seed(0)
    attn = Attention(
        32, num_heads=4, use_rel_pos=use_rel_pos, rel_pos_zero_init=False, input_size=(5, 6)
    )
    x = torch.randn(2, 5, 6, 32, requires_grad=True)
    fused, g_fused = attention_outputs_and_grads(attn, x, impl)
    explicit, g_explicit = attention_outputs_and_grads(attn, x, "explicit")
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, naive_attention(attn, x), atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_explicit):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "hw,input_size,head_dim",
    [
        ((5, 6), (5, 6), 8),  # non-square; 8 + 5 + 6 = 19 -> padded to 24
        ((7, 3), (4, 4), 16),  # interpolated rel-pos tables (13 -> 7 rows, 7 -> 5 rows)
        ((4, 4), (4, 4), 16),  # 16 + 4 + 4 = 24: no padding
    ],
)
@pytest.mark.parametrize("impl", ["folded", "blocked"])
def test_folded_and_blocked_attention_parity_and_shapes(hw, input_size, head_dim, impl):
    torch.manual_seed(0)
    attn = Attention(
        2 * head_dim, 2, use_rel_pos=True, rel_pos_zero_init=False, input_size=input_size
    )
    x = torch.randn(2, *hw, 2 * head_dim, requires_grad=True)
    folded, g_folded = attention_outputs_and_grads(attn, x, impl)
    explicit, g_explicit = attention_outputs_and_grads(attn, x, "explicit")
    torch.testing.assert_close(folded, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, naive_attention(attn, x), atol=1e-5, rtol=1e-5)
    for a, b in zip(g_folded, g_explicit):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    grads = dict(zip(["x"] + [n for n, _ in attn.named_parameters()], g_folded))
    assert grads["rel_pos_h"].abs().sum() > 0 and grads["rel_pos_w"].abs().sum() > 0


def test_fold_decomposed_rel_pos_is_the_biased_dot_product():
    torch.manual_seed(0)
    (qh, qw), E = (3, 4), 6
    q, k = torch.randn(2, 5, qh * qw, E, dtype=torch.float64).unbind(0)
    v = torch.randn(5, qh * qw, E, dtype=torch.float64)
    rh, rw = torch.randn(2 * qh - 1, E, dtype=torch.float64), torch.randn(
        2 * qw - 1, E, dtype=torch.float64
    )
    fq, fk, fv = fold_decomposed_rel_pos(q, k, v, 0.3, rh, rw, (qh, qw), (qh, qw))
    assert fq.shape[-1] == fk.shape[-1] == fv.shape[-1] == 16  # 6 + 3 + 4 = 13 -> 16
    bias = decomposed_rel_pos_bias(q, rh, rw, (qh, qw), (qh, qw))
    torch.testing.assert_close(
        0.3 * fq @ fk.transpose(-1, -2), 0.3 * q @ k.transpose(-1, -2) + bias
    )
    assert torch.equal(fv[..., :E], v) and not fv[..., E:].any()
    # key j carries the one-hot of its (row, column)
    j = 2 * qw + 1
    assert fk[0, j, E:].tolist() == [0, 0, 1] + [0, 1, 0, 0] + [0, 0, 0]


def test_attention_rejects_unknown_attn_impl():
    with pytest.raises(ValueError, match="attn_impl='flash': expected auto or one of explicit"):
        Attention(16, 2, attn_impl="flash")
    with pytest.raises(ValueError, match="attn_impl='flash'"):
        set_vit_attention_impl(Attention(16, 2), "flash")


def test_auto_attention_picks_per_device_and_grid_unless_irpe_needs_the_mask():
    """attn_impl="auto" (the default) chooses per call, from the measurements in the README: on
    CPU "blocked" where folding would at least double the head dim (global attention), else
    "sdpa_folded" (windows; every other device); "sdpa_mask" with iRPE q/k tables."""
    assert Attention(16, 2).attn_impl == "auto"
    assert Attention(16, 2, rpe="rpe-2.0-product-ctx-1-k").attn_impl == "sdpa_mask"
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert auto_attn_impl(cpu, 64, (64, 64)) == "blocked"  # ViT-B global at 1024: 64 + 128
    assert auto_attn_impl(cpu, 64, (32, 32)) == "blocked"  # ... at 512: 64 + 64
    assert auto_attn_impl(cpu, 64, (14, 14)) == "sdpa_folded"  # its windows: 64 + 28
    assert auto_attn_impl(cuda, 64, (64, 64)) == "sdpa_folded"
    vit = ViT(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, use_rel_pos=True)
    assert {blk.attn.attn_impl for blk in vit.blocks} == {"auto"}
    set_vit_attention_impl(vit, "explicit")
    set_vit_attention_impl(vit, "auto")
    assert {blk.attn.attn_impl for blk in vit.blocks} == {"auto"}
    vit = ViT(
        img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, rpe="rpe-2.0-product-ctx-1-k"
    )
    assert {blk.attn.attn_impl for blk in vit.blocks} == {"sdpa_mask"}


@pytest.mark.parametrize("hw,chosen", [((4, 4), "blocked"), ((2, 3), "sdpa_folded")])
def test_auto_attention_runs_the_chosen_implementation(hw, chosen):
    """The same numbers, bit for bit, as the implementation auto_attn_impl names (head dim 8:
    a 4x4 grid is 'global' for the rule, a 2x3 one a 'window'), forward and gradients."""
    torch.manual_seed(0)
    attn = Attention(16, 2, use_rel_pos=True, rel_pos_zero_init=False, input_size=hw)
    assert auto_attn_impl(torch.device("cpu"), 8, hw) == chosen
    x = torch.randn(2, *hw, 16, requires_grad=True)
    auto, g_auto = attention_outputs_and_grads(attn, x, "auto")
    picked, g_picked = attention_outputs_and_grads(
        attn, x, "blocked" if chosen == "blocked" else "folded"
    )
    other, _ = attention_outputs_and_grads(attn, x, "folded" if chosen == "blocked" else "blocked")
    assert torch.equal(auto, picked) and not torch.equal(auto, other)
    assert all(torch.equal(a, b) for a, b in zip(g_auto, g_picked))


@pytest.mark.parametrize(
    "flags,impl",
    [
        (dict(use_sdpa=False), "explicit"),
        (dict(use_sdpa=False, sdpa_rel_pos="folded"), "explicit"),
        (dict(use_sdpa=True), "sdpa_mask"),
        (dict(sdpa_rel_pos="folded"), "sdpa_folded"),
        (dict(use_sdpa=True, sdpa_rel_pos="mask"), "sdpa_mask"),
    ],
)
def test_previous_attention_flags_still_work_with_a_deprecation_warning(flags, impl):
    with pytest.warns(FutureWarning, match="use_sdpa / sdpa_rel_pos are deprecated.*attn_impl"):
        assert Attention(16, 2, **flags).attn_impl == impl
    with pytest.warns(FutureWarning):
        vit = ViT(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, **flags)
    assert {blk.attn.attn_impl for blk in vit.blocks} == {impl}
    with pytest.warns(FutureWarning):
        set_vit_attention_impl(vit, flags.get("use_sdpa", True), flags.get("sdpa_rel_pos"))
    assert {blk.attn.attn_impl for blk in vit.blocks} == {impl}
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="sdpa_rel_pos='flash'"):
        Attention(16, 2, sdpa_rel_pos="flash")


@pytest.mark.parametrize("impl", ["folded", "mask", "blocked", "explicit"])
def test_attention_bf16_autocast_close_to_fp32(impl):
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, use_rel_pos=True, rel_pos_zero_init=False, input_size=(4, 4))
    set_vit_attention_impl(attn, IMPLS[impl])
    x = torch.randn(2, 4, 4, 32)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("attn_impl", ["sdpa_folded", "sdpa_mask", "blocked"])
def test_window_block_matches_per_window_attention_with_padding(attn_impl):
    torch.manual_seed(0)
    blk = Block(
        24, 2, window_size=3, use_rel_pos=True, rel_pos_zero_init=False, attn_impl=attn_impl
    )
    x = torch.randn(1, 5, 7, 24)  # not divisible by the window, not square
    out = blk(x)
    # reference: zero-pad the normed tokens, attend in each window on its own, crop
    normed = F.pad(blk.norm1(x), (0, 0, 0, 2, 0, 1))
    attn_out = torch.zeros_like(normed)
    for i in range(0, 6, 3):
        for j in range(0, 9, 3):
            attn_out[:, i : i + 3, j : j + 3] = naive_attention(
                blk.attn, normed[:, i : i + 3, j : j + 3]
            )
    y = x + attn_out[:, :5, :7]
    ref = y + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(y))))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_res_bottleneck_block_starts_as_identity_and_learns():
    torch.manual_seed(0)
    blk = ResBottleneckBlock(16, 16, 8)
    # "LN": detectron2's own channels-first LayerNorm where it has one (main), else fpt's
    ln = getattr(detectron2.layers.batch_norm, "LayerNorm", LayerNorm)
    assert type(blk.norm1) is ln and blk.norm1.eps == 1e-6
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(blk(x), x)
    blk.norm3.bias.data.fill_(0.25)
    torch.testing.assert_close(blk(x), x + 0.25)
    blk(x).sum().backward()
    assert (
        blk.conv1.weight.grad is None or blk.conv1.weight.grad.abs().sum() == 0
    )  # norm3.weight is 0
    assert blk.norm3.weight.grad.abs().sum() > 0


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    x = torch.ones(1000, 3, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # whole sample kept or dropped
    assert abs(y.mean().item() - 1.0) < 0.15
    dp.eval()
    assert torch.equal(dp(x), x)


def test_vit_fused_equals_explicit_at_other_size():
    vit = tiny_vit().train()
    # 5x9 tokens: rel-pos + pos-embed interpolation, window padding, global non-square blocks
    x = torch.randn(1, 3, 40, 72, requires_grad=True)
    impls = ("folded", "mask", "blocked", "explicit")
    outs = {impl: attention_outputs_and_grads(vit, x, impl) for impl in impls}
    assert outs["folded"][0].shape == (1, 48, 5, 9)
    for impl in impls[:-1]:
        torch.testing.assert_close(outs[impl][0], outs["explicit"][0], atol=1e-5, rtol=1e-5)
        for a, b in zip(outs[impl][1], outs["explicit"][1]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_vit_parameters_and_init():
    vit = tiny_vit()
    assert vit.pos_embed.shape == (1, 1 + 6 * 6, 48)
    assert vit.blocks[0].attn.rel_pos_h.shape == (5, 16)  # window block: 2*3-1
    assert vit.blocks[1].attn.rel_pos_h.shape == (15, 16)  # global block: 2*(64/8)-1
    assert hasattr(vit.blocks[1], "residual") and not hasattr(vit.blocks[0], "residual")
    assert vit.output_shape()["last_feat"].channels == 48
    assert vit.output_shape()["last_feat"].stride == 8
    assert ViT(depth=1, use_rel_pos=True).blocks[0].attn.rel_pos_h.abs().sum() == 0
    assert ViT(depth=1, pretrain_use_cls_token=False).pos_embed.shape == (1, 196, 768)


def test_activation_checkpointing_gives_same_gradients():
    x = torch.randn(2, 3, 48, 40)
    grads = []
    for ckpt in (False, True):
        vit = tiny_vit(use_act_checkpoint=ckpt, drop_path_rate=0.3).train()
        torch.manual_seed(1)
        vit(x)["last_feat"].square().mean().backward()
        grads.append([p.grad.clone() for p in vit.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
