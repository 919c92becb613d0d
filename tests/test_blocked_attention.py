"""fpt.layers.blocked_attention: blocked rel-pos attention with recompute against the explicit
reference (upstream ViTDet's order of operations), forward and every gradient."""

import pytest
import torch

from fpt.layers.blocked_attention import blocked_rel_pos_attention
from fpt.layers.rel_pos import add_decomposed_rel_pos, decomposed_rel_pos_terms


def make_inputs(batch, heads, grid, E, Ev, dtype=torch.float64):
    torch.manual_seed(0)
    n = grid[0] * grid[1]
    q, k = (torch.randn(batch, heads, n, E, dtype=dtype, requires_grad=True) for _ in range(2))
    v = torch.randn(batch, heads, n, Ev, dtype=dtype, requires_grad=True)
    rh = torch.randn(2 * grid[0] - 1, E, dtype=dtype, requires_grad=True)
    rw = torch.randn(2 * grid[1] - 1, E, dtype=dtype, requires_grad=True)
    return q, k, v, rh, rw


def explicit(q, k, v, rh, rw, grid, scale):
    B, h, n, E = q.shape
    logits = ((q * scale) @ k.transpose(-2, -1)).view(B * h, n, n)
    logits = add_decomposed_rel_pos(logits, q.reshape(B * h, n, E), rh, rw, grid, grid)
    return logits.view(B, h, n, n).softmax(-1) @ v


def blocked(q, k, v, rh, rw, grid, scale, block_elements=None):
    B, h, n, E = q.shape
    rel_h, rel_w = decomposed_rel_pos_terms(q.reshape(B * h, n, E), rh, rw, grid, grid)
    rel_h, rel_w = rel_h.reshape(B, h, n, grid[0]), rel_w.reshape(B, h, n, grid[1])
    return blocked_rel_pos_attention(q, k, v, rel_h, rel_w, scale, block_elements)


@pytest.mark.parametrize(
    "block_elements",
    [
        7,  # fewer than one row of logits: one query row per block
        50,  # several rows of one attention; the last block shorter
        3 * 20 * 20,  # whole attentions, three at a time; the last group shorter
        None,  # the default: everything in one block here
    ],
)
@pytest.mark.parametrize("grid", [(4, 5), (3, 3)])
def test_blocked_equals_explicit_forward_and_gradients(block_elements, grid):
    inputs = make_inputs(2, 3, grid, 8, 5)  # Ev != E
    scale = 8**-0.5
    grad = torch.randn(2, 3, grid[0] * grid[1], 5, dtype=torch.float64)
    ref = explicit(*inputs, grid, scale)
    out = blocked(*inputs, grid, scale, block_elements)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_blocked_keeps_no_logits_for_backward():
    """What autograd saves is q, k, v and the rel-pos terms: O(N (E + k_h + k_w)), not the
    (N x N) logits or probabilities the explicit formulation keeps."""
    grid = (16, 16)
    n = grid[0] * grid[1]
    inputs = make_inputs(1, 2, grid, 8, 8, torch.float32)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        blocked(*inputs, grid, 8**-0.5, block_elements=64 * n)
    assert max(saved) < n * n / 4
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        explicit(*inputs, grid, 8**-0.5)
    assert max(saved) >= 2 * n * n  # the reference keeps every head's (N x N) probabilities


def test_blocked_half_inputs_keep_their_dtype_close_to_float32():
    grid = (4, 4)
    q, k, v, rh, rw = make_inputs(1, 2, grid, 8, 8, torch.float32)
    ref = explicit(q, k, v, rh, rw, grid, 8**-0.5)
    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    out = blocked(*low, rh.detach().bfloat16(), rw.detach().bfloat16(), grid, 8**-0.5, 40)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    out.float().square().sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad).all() for t in low)


def test_blocked_without_grad_equals_with_grad():
    grid = (5, 4)
    inputs = make_inputs(2, 2, grid, 8, 8)
    with torch.no_grad():
        out = blocked(*inputs, grid, 0.3, block_elements=30)
    torch.testing.assert_close(out, blocked(*inputs, grid, 0.3, block_elements=30), rtol=0, atol=0)
