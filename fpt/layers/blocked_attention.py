"""Attention with the decomposed relative-position bias, computed block by block with
recompute: ``softmax(scale * q k^T + rel_h + rel_w) v`` without ever holding the (N x N) logits
of a whole attention, and without the per-pair bias tensor.

Why: on CPU, PyTorch's fused SDPA kernel takes the bias either as an (N x N) mask (materialized,
and slow to differentiate) or folded into the head dimension (:func:`fold_decomposed_rel_pos`:
no mask, but q, k and v grow from 64 to 64 + k_h + k_w channels, 3x the matrix products for a
64 x 64 grid). Here every block of (heads, query rows) is one batched matrix product with the bias
as its additive input (``baddbmm``), a softmax and a second product, on blocks small enough to
stay in the CPU's caches; the backward pass recomputes the block's probabilities instead of
saving them (memory as a fused kernel's: q, k, v and the small rel_h / rel_w terms), so every
matrix product has the plain head dim. Measured in ``benchmarks/vit_attention.py`` (README).
"""

import torch

__all__ = ["blocked_rel_pos_attention"]

# elements of one block's (rows x keys) logits: 4 M floats, 16 MB, within a server CPU's L3
BLOCK_ELEMENTS = 1 << 22


def _blocks(batch, queries, keys, block_elements):
    """(batch slice, query slice) pairs covering (batch, queries) with about ``block_elements``
    logits each: whole attentions grouped along the batch when one is small (windows), else
    one batch entry split into runs of query rows (global attention)."""
    per_attention = queries * keys
    if per_attention <= block_elements:
        step = max(1, block_elements // per_attention)
        for b in range(0, batch, step):
            yield slice(b, min(b + step, batch)), slice(0, queries)
    else:
        rows = max(1, block_elements // keys)
        for b in range(batch):
            for i in range(0, queries, rows):
                yield slice(b, b + 1), slice(i, min(i + rows, queries))


def _probabilities(q, k, rel_h, rel_w, scale):
    """softmax(scale * q k^T + rel_h + rel_w) of one block, in float32 for half inputs.
    q: (b, n, E); k: (b, M, E); rel_h: (b, n, k_h); rel_w: (b, n, k_w), M = k_h * k_w.
    Returns (probabilities in float32 or q's dtype, the same in q's dtype)."""
    b, n, _ = q.shape
    bias = (rel_h[:, :, :, None] + rel_w[:, :, None, :]).view(b, n, -1)
    logits = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    low = q.dtype in (torch.float16, torch.bfloat16)
    p = torch.softmax(logits, dim=-1, dtype=torch.float32 if low else None)
    return p, p.to(q.dtype) if low else p


class _BlockedRelPosAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rel_h, rel_w, scale, block_elements):
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        for bs, qs in _blocks(q.shape[0], q.shape[1], k.shape[1], block_elements):
            _, p = _probabilities(q[bs, qs], k[bs], rel_h[bs, qs], rel_w[bs, qs], scale)
            torch.bmm(p, v[bs], out=out[bs, qs])  # a block of rows is contiguous in ``out``
        ctx.save_for_backward(q, k, v, rel_h, rel_w)
        ctx.scale, ctx.block_elements = scale, block_elements
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, rel_h, rel_w = ctx.saved_tensors
        scale = ctx.scale
        grad_out = grad_out.contiguous()
        q_scaled, k_scaled = q * scale, k * scale  # d(scale q k^T): ds k scale, ds^T q scale
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        d_rel_h = torch.empty_like(rel_h)
        d_rel_w = torch.empty_like(rel_w)
        k_h, k_w = rel_h.shape[-1], rel_w.shape[-1]
        for bs, qs in _blocks(q.shape[0], q.shape[1], k.shape[1], ctx.block_elements):
            g = grad_out[bs, qs]
            p32, p = _probabilities(q[bs, qs], k[bs], rel_h[bs, qs], rel_w[bs, qs], scale)
            dv[bs].baddbmm_(p.transpose(1, 2), g)
            dp = torch.bmm(g, v[bs].transpose(1, 2)).to(p32.dtype)
            ds = torch._softmax_backward_data(dp, p32, -1, p32.dtype)  # p * (dp - sum(p dp))
            grid = ds.view(*ds.shape[:2], k_h, k_w)
            torch.sum(grid, -1, out=d_rel_h[bs, qs])
            torch.sum(grid, -2, out=d_rel_w[bs, qs])
            ds = ds.to(q.dtype)
            torch.bmm(ds, k_scaled[bs], out=dq[bs, qs])
            dk[bs].baddbmm_(ds.transpose(1, 2), q_scaled[bs, qs])
        return dq, dk, dv, d_rel_h, d_rel_w, None, None


def blocked_rel_pos_attention(q, k, v, rel_h, rel_w, scale, block_elements=None):
    """``softmax(scale * q k^T + rel_h[..., h_j] + rel_w[..., w_j]) v``, blocked, with recompute.

    Args:
        q (Tensor): (..., N, E) queries; k (Tensor): (..., M, E) keys, M = k_h * k_w in
            row-major order (key j at row h_j = j // k_w, column w_j = j % k_w).
        v (Tensor): (..., M, Ev) values.
        rel_h (Tensor): (..., N, k_h) and rel_w (Tensor): (..., N, k_w): the decomposed
            relative-position terms (:func:`fpt.layers.rel_pos.decomposed_rel_pos_terms`),
            added unscaled.
        scale (float): logit scale of ``q k^T``.
        block_elements (int): logits per block (memory and cache footprint of one block;
            default :data:`BLOCK_ELEMENTS`).
    Returns:
        Tensor: (..., N, Ev), q's dtype (half inputs: products in it, softmax in float32).
    """
    lead = q.shape[:-2]

    def flat(t):
        return t.reshape(-1, *t.shape[-2:]).to(q.dtype).contiguous()

    with torch.autocast(q.device.type, enabled=False):
        out = _BlockedRelPosAttention.apply(
            flat(q),
            flat(k),
            flat(v),
            flat(rel_h),
            flat(rel_w),
            scale,
            block_elements or BLOCK_ELEMENTS,
        )
    return out.view(*lead, *out.shape[-2:])
