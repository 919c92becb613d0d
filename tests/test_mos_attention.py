"""MoS attention: the efficient paths equal the explicit formula, forward and backward."""

import itertools
import math

import pytest
import torch

from fpt.layers.mos_attention import mos_attention


def _inputs(batch=2, length=37, source=23, channels=16, value_channels=12, parts=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, channels, generator=g)
    k = torch.randn(batch, source, channels, generator=g)
    v = torch.randn(batch, source, value_channels, generator=g)
    pi = torch.softmax(torch.randn(batch, parts, generator=g), dim=-1)
    return [t.requires_grad_() for t in (q, k, v, pi)]


def test_naive_is_the_formula():
    """impl="naive" against an element-by-element evaluation of the paper's equations."""
    q, k, v, pi = (t.detach().double() for t in _inputs(1, 5, 4, 6, 3, parts=3))
    for similarity in ("dot", "euclidean"):
        out = mos_attention(q, k, v, pi, similarity, scale=0.7, impl="naive")
        d = 2  # 6 channels / 3 parts
        for i in range(5):
            weights = [0.0] * 4
            for n in range(3):
                qn, kn = q[0, i, n * d : (n + 1) * d], k[0, :, n * d : (n + 1) * d]
                if similarity == "dot":
                    s = [float(qn @ kn[j]) for j in range(4)]
                else:
                    s = [-float(((qn - kn[j]) ** 2).sum()) for j in range(4)]
                z = sum(math.exp(0.7 * x) for x in s)
                for j in range(4):
                    weights[j] += float(pi[0, n]) * math.exp(0.7 * s[j]) / z
            expected = sum(weights[j] * v[0, j] for j in range(4))
            torch.testing.assert_close(out[0, i], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "similarity,impl,parts,chunk_size",
    [
        (s, i, n, c)
        for s, i, n, c in itertools.product(
            ("dot", "euclidean"), ("sdpa", "chunked"), (1, 2, 4), (None, 8)
        )
    ],
)
def test_efficient_matches_naive(similarity, impl, parts, chunk_size):
    inputs = _inputs(parts=parts)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = mos_attention(*inputs, similarity, impl=impl, chunk_size=chunk_size)
    ref = mos_attention(*ref_inputs, similarity, impl="naive")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for name, t, r in zip("q k v pi".split(), inputs, ref_inputs):
        torch.testing.assert_close(t.grad, r.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_euclidean_is_shift_invariant_not_dot():
    """Adding a constant to every key changes dot attention but never -||q - k||^2 ranking."""
    q, k, v, pi = (t.detach() for t in _inputs(parts=1))
    shifted = k + 3.0
    eu = mos_attention(q, k, v, pi, "euclidean")
    # -||(q + c) - (k + c)||^2 == -||q - k||^2: shifting both changes nothing
    torch.testing.assert_close(mos_attention(q + 3.0, shifted, v, pi, "euclidean"), eu)
    assert not torch.allclose(
        mos_attention(q + 3.0, shifted, v, pi, "dot"), mos_attention(q, k, v, pi, "dot"), atol=1e-3
    )


def test_feature_map_attention_runs_on_the_fused_kernel():
    """Projections of NCHW maps must reach the flash kernel (no L x S matrix), not the math path."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fpt.layers.mos_attention import MoSAttention

    for similarity in ("dot", "euclidean"):
        attention = MoSAttention(16, 8, num_parts=2, similarity=similarity)
        fine, coarse = torch.randn(2, 16, 9, 11), torch.randn(2, 16, 5, 6)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot run
            out = attention(fine, coarse)
        assert out.shape == fine.shape


def test_bad_arguments_raise_one_clear_error():
    q, k, v, pi = (t.detach() for t in _inputs(parts=3, channels=16))
    with pytest.raises(ValueError, match="divisible by the number of parts"):
        mos_attention(q, k, v, pi)
    with pytest.raises(ValueError, match="similarity='cosine'"):
        mos_attention(q, k, v, pi[:, :2] / pi[:, :2].sum(1, keepdim=True), "cosine")
    with pytest.raises(ValueError, match="attention impl='flash'"):
        mos_attention(q, k, v, pi[:, :2] / pi[:, :2].sum(1, keepdim=True), impl="flash")
