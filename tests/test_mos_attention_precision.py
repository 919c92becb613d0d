"""MoS attention under autocast and on CUDA (review of issue 11, items 6j and 6k): the Euclidean
similarity, the explicit softmaxes and the mixture run in fp32 inside bf16/fp16 autocast; the
q/k zero-padding for the fused CPU kernel is not applied on CUDA."""

import importlib

import pytest
import torch

mos = importlib.import_module("fpt.layers.mos_attention")


def _bf16_exact_inputs(offset=4.0, seed=0):
    """q, k with a common offset, as feature maps have (||k||^2 >> ||q - k||^2), v and pi; every
    value exactly representable in bf16, so only the attention's own arithmetic can differ."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 64, 64, generator=g) + offset
    k = torch.randn(2, 48, 64, generator=g) + offset
    v = torch.randn(2, 48, 32, generator=g)
    pi = torch.softmax(torch.randn(2, 4, generator=g), dim=-1)
    return [t.bfloat16().float() for t in (q, k, v, pi)]


@pytest.mark.parametrize(
    "similarity, impl",
    [("euclidean", "sdpa"), ("euclidean", "chunked"), ("euclidean", "naive")]
    + [("dot", "chunked"), ("dot", "naive")],
)
def test_fp32_parts_under_bf16_autocast_equal_fp32_rounded_once(similarity, impl):
    """Before: errors of 9-19% of the output's range (bf16 logits of ~1000); now the fp32
    result, rounded to bf16 once."""
    inputs = _bf16_exact_inputs()
    reference = mos.mos_attention(*inputs, similarity, impl=impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mos.mos_attention(*inputs, similarity, impl=impl)
    assert out.dtype == torch.bfloat16  # what autocast gives callers
    torch.testing.assert_close(out, reference.bfloat16(), rtol=0, atol=0)


def test_fused_dot_attention_under_bf16_autocast_is_close_to_fp32():
    """The per-part fused kernels keep bf16 (fp32 accumulation inside); the mixture is fp32."""
    inputs = _bf16_exact_inputs()
    reference = mos.mos_attention(*inputs, "dot")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mos.mos_attention(*inputs, "dot")
    error = (out.float() - reference).abs().max() / reference.abs().max()
    assert error < 0.01, error


def test_euclidean_gradients_under_autocast_match_fp32():
    inputs = [t.requires_grad_() for t in _bf16_exact_inputs()]
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    grad = torch.randn(2, 64, 32)
    mos.mos_attention(*ref_inputs, "euclidean").backward(grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mos.mos_attention(*inputs, "euclidean")
    out.float().backward(grad)
    for name, t, r in zip("q k v pi".split(), inputs, ref_inputs):
        scale = r.grad.abs().max()
        assert (t.grad - r.grad).abs().max() <= 0.02 * scale, name


def test_without_autocast_nothing_changes_type():
    inputs = [t.double() for t in _bf16_exact_inputs()]
    for impl in ("sdpa", "chunked", "naive"):
        assert mos.mos_attention(*inputs, "euclidean", impl=impl).dtype == torch.float64


@pytest.mark.parametrize(
    "device, qk_dim, value_dim, widths",
    [
        ("cpu", 129, 256, (256, 256)),  # CPU flash: one width for q, k and v
        ("cpu", 64, 256, (256, 256)),
        ("cpu", 33, 12, (40, 40)),
        ("cuda", 129, 256, (136, 256)),  # CUDA: q/k padded to a multiple of 8 only
        ("cuda", 64, 256, (64, 256)),
        ("cuda", 33, 12, (40, 16)),
    ],
)
def test_sdpa_padding_by_device(device, qk_dim, value_dim, widths):
    assert mos.sdpa_widths(device, qk_dim, value_dim) == widths


def test_query_key_widths_reaching_the_kernel(monkeypatch):
    """CPU as before (q, k, v of one width); another device (``meta`` stands in for CUDA here)
    gets q/k of their own width."""
    seen = []
    sdpa = mos.F.scaled_dot_product_attention

    def record(q, k, v, **kwargs):
        seen.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(mos.F, "scaled_dot_product_attention", record)
    for device in ("cpu", "meta"):
        q, k, v = (torch.randn(2, n, 256, device=device) for n in (10, 7, 7))
        pi = torch.full((2, 2), 0.5, device=device)
        assert mos.mos_attention(q, k, v, pi, "euclidean").shape == (2, 10, 256)
    assert seen == [(256, 256, 256), (136, 136, 256)]  # d = 128, +1 for Euclidean
