"""Position encodings and window helpers of plain-ViT detection backbones (ViTDet, MViTv2).

Tokens are kept channels-last, (B, H, W, C), as in detectron2's ViTDet; the math here follows
``detectron2/modeling/backbone/utils.py`` (detectron2 main branch) so that official checkpoints
give the same outputs.
"""

import math

import torch
import torch.nn.functional as F

__all__ = [
    "window_partition",
    "window_unpartition",
    "get_rel_pos",
    "decomposed_rel_pos_terms",
    "decomposed_rel_pos_bias",
    "add_decomposed_rel_pos",
    "fold_decomposed_rel_pos",
    "get_abs_pos",
]


def window_partition(x, window_size):
    """Split tokens into non-overlapping windows, zero-padding bottom/right if needed.

    Args:
        x (Tensor): (B, H, W, C).
        window_size (int): window side.
    Returns:
        windows (Tensor): (B * num_windows, window_size, window_size, C).
        (Hp, Wp): padded height and width, multiples of ``window_size``.
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(windows, window_size, pad_hw, hw):
    """Inverse of :func:`window_partition`: merge windows and crop the padding.

    Args:
        windows (Tensor): (B * num_windows, window_size, window_size, C).
        window_size (int): window side.
        pad_hw (tuple[int, int]): padded (Hp, Wp).
        hw (tuple[int, int]): original (H, W).
    Returns:
        Tensor: (B, H, W, C).
    """
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def get_rel_pos(q_size, k_size, rel_pos):
    """Relative position embeddings for every (query, key) pair along one axis.

    The table has ``2 * size - 1`` rows; if the runtime sizes need another length it is linearly
    interpolated (``F.interpolate(mode="linear")``), as upstream.

    Args:
        q_size (int), k_size (int): number of query / key positions along the axis.
        rel_pos (Tensor): (L, C) table.
    Returns:
        Tensor: (q_size, k_size, C).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos_resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos_resized = rel_pos_resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        rel_pos_resized = rel_pos

    # scale the coordinates of the shorter side when q and k sizes differ
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos_resized[relative_coords.long()]


def decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size):
    """rel_h (B, q_h, q_w, k_h) = <q, Rh> and rel_w (B, q_h, q_w, k_w) = <q, Rw>."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh = get_rel_pos(q_h, k_h, rel_pos_h)
    Rw = get_rel_pos(q_w, k_w, rel_pos_w)
    B, _, dim = q.shape
    r_q = q.reshape(B, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
    return rel_h, rel_w


def decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, q_size, k_size):
    """Decomposed relative position bias of MViTv2/ViTDet, as an additive attention mask.

    ``bias[b, (i, j), (k, l)] = <q[b, (i, j)], Rh[i, k]> + <q[b, (i, j)], Rw[j, l]>``, computed
    with the *unscaled* queries.

    Args:
        q (Tensor): (B, q_h * q_w, C) queries (B may be batch * heads).
        rel_pos_h (Tensor): (Lh, C) table for the height axis.
        rel_pos_w (Tensor): (Lw, C) table for the width axis.
        q_size (tuple[int, int]): (q_h, q_w). k_size (tuple[int, int]): (k_h, k_w).
    Returns:
        Tensor: (B, q_h * q_w, k_h * k_w).
    """
    rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(q.shape[0], q_size[0] * q_size[1], k_size[0] * k_size[1])


def add_decomposed_rel_pos(attn, q, rel_pos_h, rel_pos_w, q_size, k_size):
    """Add the decomposed relative position bias to attention logits, in upstream's order of
    operations (``attn + rel_h`` then ``+ rel_w``): the explicit reference path.

    Args:
        attn (Tensor): (B, q_h * q_w, k_h * k_w) attention logits.
        Other arguments: see :func:`decomposed_rel_pos_bias`.
    Returns:
        Tensor: (B, q_h * q_w, k_h * k_w).
    """
    (q_h, q_w), (k_h, k_w) = q_size, k_size
    rel_h, rel_w = decomposed_rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    B = attn.shape[0]
    attn = attn.view(B, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(B, q_h * q_w, k_h * k_w)


def fold_decomposed_rel_pos(q, k, v, scale, rel_pos_h, rel_pos_w, q_size, k_size, multiple=8):
    """Fold the decomposed relative position bias into the dot product, so that
    ``F.scaled_dot_product_attention(q', k', v', scale=scale)[..., :Ev]`` equals
    ``softmax(scale * q k^T + bias) v`` with **no** (N x N) mask (flash/memory-efficient kernels)::

        q'_i = [q_i, rel_h_i / scale (k_h), rel_w_i / scale (k_w), 0...]
        k'_j = [k_j, onehot(h_j) (k_h), onehot(w_j) (k_w), 0...]
        => scale * q'_i . k'_j = scale * q_i . k_j + rel_h[i, h_j] + rel_w[i, w_j]

    where ``rel_h[i, kh] = <q_i, Rh[h_i, kh]>`` uses the *unscaled* queries, as upstream (the
    1 / scale goes into the small tables, so q is not rescaled: one full-size copy less). The head
    dim E' is padded with zeros to a multiple of ``multiple``, and ``v`` to E' too (SDPA's fused
    kernels want equal q/k/v head dims).

    Args:
        q, k (Tensor): (..., q_h * q_w, E) and (..., k_h * k_w, E).
        v (Tensor): (..., k_h * k_w, Ev), Ev <= E'.
        scale (float): logit scale of ``q k^T``, to be passed on to SDPA.
        rel_pos_h, rel_pos_w, q_size, k_size: see :func:`decomposed_rel_pos_bias`.
        multiple (int): pad the folded head dim to a multiple of this.
    Returns:
        q' (Tensor): (..., q_h * q_w, E'); k' (Tensor): (..., k_h * k_w, E');
        v' (Tensor): (..., k_h * k_w, E').
    """
    (k_h, k_w), E = k_size, q.shape[-1]
    rel_h, rel_w = decomposed_rel_pos_terms(
        q.reshape(-1, q.shape[-2], E), rel_pos_h / scale, rel_pos_w / scale, q_size, k_size
    )
    dim = E + k_h + k_w
    pad = -dim % multiple
    # one-hot coordinates of the keys, row j = (h_j, w_j) in row-major order, then zero padding
    key_pos = torch.cat(
        [
            torch.eye(k_h, dtype=k.dtype, device=k.device).repeat_interleave(k_w, dim=0),
            torch.eye(k_w, dtype=k.dtype, device=k.device).repeat(k_h, 1),
            k.new_zeros(k_h * k_w, pad),
        ],
        dim=1,
    )
    lead = q.shape[:-1]
    q = torch.cat(
        [
            q,
            rel_h.reshape(*lead, k_h).to(q.dtype),
            rel_w.reshape(*lead, k_w).to(q.dtype),
            q.new_zeros(()).expand(*lead, pad),
        ],
        dim=-1,
    )
    k = torch.cat([k, key_pos.expand(*k.shape[:-1], -1)], dim=-1)
    if v.shape[-1] < dim + pad:
        v = F.pad(v, (0, dim + pad - v.shape[-1]))
    return q, k, v


def get_abs_pos(abs_pos, has_cls_token, hw):
    """Absolute position embeddings resized to the token grid.

    Args:
        abs_pos (Tensor): (1, [1 +] S * S, C) embeddings stored at pre-training size.
        has_cls_token (bool): whether the first slot belongs to the cls token (dropped).
        hw (tuple[int, int]): token grid (H, W).
    Returns:
        Tensor: (1, H, W, C); resized bicubically (align_corners=False) if S != H or S != W.
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    xy_num = abs_pos.shape[1]
    size = int(math.sqrt(xy_num))
    if size * size != xy_num:
        raise ValueError(
            f"pos_embed has {xy_num} grid positions (cls token dropped: {has_cls_token}), "
            "expected a square number"
        )
    if size != h or size != w:
        new_abs_pos = F.interpolate(
            abs_pos.reshape(1, size, size, -1).permute(0, 3, 1, 2),
            size=(h, w),
            mode="bicubic",
            align_corners=False,
        )
        return new_abs_pos.permute(0, 2, 3, 1)
    return abs_pos.reshape(1, h, w, -1)
