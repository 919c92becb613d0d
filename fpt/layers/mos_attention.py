"""Mixture-of-Softmaxes (MoS) attention, as used by FPT's Self- and Grounding Transformers.

With queries ``q_i``, keys ``k_j`` and values ``v_j``, the channels of ``q`` and ``k`` are split
into ``N`` parts and

    out_i = sum_j w_ij v_j,   w_ij = sum_n pi_n softmax_j(scale * s^n_ij)

where ``s^n_ij = <q_i,n, k_j,n>`` ("dot") or ``-||q_i,n - k_j,n||^2`` ("euclidean"), and ``pi`` is
one N-way distribution per image (Zhang et al., FPT, ECCV 2020, eqs. 2-4).

Because ``v`` is shared, ``out = sum_n pi_n * Attention_n(q_n, k_n, v)``: N ordinary softmax
attentions. And since ``softmax_j(-||q - k_j||^2) = softmax_j(2<q, k_j> - ||k_j||^2)``, the
Euclidean similarity is a dot product of augmented vectors ``q' = [2q, 1]``, ``k' = [k, -||k||^2]``.
So every term runs through :func:`torch.nn.functional.scaled_dot_product_attention` (fused,
memory-efficient kernels), or the N softmaxes are mixed explicitly over chunks of queries
(recomputed in the backward pass) before one product with V: no ``L x S`` matrix is kept for
the whole map.

Under autocast (fp16/bf16), ``2<q, k_j> - ||k_j||^2`` cancels (two large terms, a small
difference), explicit logits ``q k^T`` round, and the mixture ``sum_n pi_n ...`` rounds every
part: the Euclidean attention, the explicit ("chunked", "naive") attentions and the mixture run
in fp32 there. Only the fused dot-product attention of each part keeps autocast's type (its
kernels accumulate the logits in fp32, as for any attention). The output has autocast's type.

:func:`mos_attention` is the single entry point; ``impl="naive"`` is the explicit reference
implementation of the formula above, which the tests hold the efficient paths equal to.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "mos_attention",
    "sdpa_widths",
    "MixtureWeights",
    "MoSAttention",
    "SIMILARITIES",
    "ATTENTION_IMPLS",
]

SIMILARITIES = ("dot", "euclidean")
ATTENTION_IMPLS = ("sdpa", "chunked", "naive")
DEFAULT_CHUNK_SIZE = 1024


def check_choice(name, value, choices):
    """Raise one clear error line when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported: expected one of {list(choices)}")


def mos_attention(q, k, v, pi, similarity="dot", scale=None, impl="sdpa", chunk_size=None):
    """
    Args:
        q: (B, L, C) queries.
        k: (B, S, C) keys.
        v: (B, S, Cv) values, shared by all parts.
        pi: (B, N) mixture weights, each row a distribution; ``C`` must be divisible by ``N``.
        similarity: "dot" or "euclidean" (negative squared Euclidean distance).
        scale: multiplies the similarity before the softmax (a temperature);
            default ``1 / sqrt(C / N)``.
        impl: "sdpa" (``scaled_dot_product_attention`` per part), "chunked" (softmaxes mixed
            over chunks of queries, then one product with V; recomputed in backward) or "naive"
            (the explicit formula; stores
            ``B x N x L x S``, and ``x C/N`` more for "euclidean": small inputs only).
        chunk_size: queries per chunk; "sdpa": default all at once, "chunked": default 1024.

    Returns:
        (B, L, Cv): ``out_i = sum_j sum_n pi_n softmax_j(scale * s^n_ij) v_j``.
    """
    check_choice("similarity", similarity, SIMILARITIES)
    check_choice("attention impl", impl, ATTENTION_IMPLS)
    num_parts = pi.shape[1]
    channels = q.shape[-1]
    if channels % num_parts != 0 or k.shape[-1] != channels:
        raise ValueError(
            f"MoS attention: query/key channels ({channels}, {k.shape[-1]}) must be equal "
            f"and divisible by the number of parts ({num_parts})"
        )
    part_dim = channels // num_parts
    if scale is None:
        scale = 1.0 / math.sqrt(part_dim)
    out_dtype = _output_dtype(q)
    if out_dtype in _LOW_PRECISION and (similarity == "euclidean" or impl != "sdpa"):
        # in fp16/bf16, 2<q,k> - ||k||^2 cancels and explicit logits round: fp32 here
        with _no_autocast(q.device.type):
            out = mos_attention(
                *(_at_least_fp32(t) for t in (q, k, v, pi)), similarity, scale, impl, chunk_size
            )
        return out.to(out_dtype)
    # (B, N, L, d) and (B, N, S, d)
    q = q.unflatten(-1, (num_parts, part_dim)).transpose(1, 2)
    k = k.unflatten(-1, (num_parts, part_dim)).transpose(1, 2)
    if impl == "naive":
        if similarity == "dot":
            s = q @ k.transpose(-1, -2)
        else:
            s = -((q.unsqueeze(3) - k.unsqueeze(2)) ** 2).sum(-1)
        return _mix(pi, torch.softmax(scale * s, dim=-1)) @ v

    q, k = _augmented(q, k, similarity)
    if impl == "chunked":
        chunks = q.split(chunk_size or DEFAULT_CHUNK_SIZE, dim=2)
        if torch.is_grad_enabled():  # recompute each chunk's softmax in backward, not stored
            outputs = [
                checkpoint(_mixed_chunk, c, k, v, pi, scale, use_reentrant=False) for c in chunks
            ]
        else:
            outputs = [_mixed_chunk(c, k, v, pi, scale) for c in chunks]
        return _cat(outputs)
    # one fused attention per part, q/k and v zero-padded (zeros change no dot product) to the
    # widths the fused kernels take (see sdpa_widths)
    value_dim = v.shape[-1]
    qk_width, v_width = sdpa_widths(q.device.type, q.shape[-1], value_dim)
    # the kernels also need the last dimension contiguous (projections of NCHW maps are not)
    q, k = (F.pad(t, (0, qk_width - t.shape[-1])).contiguous() for t in (q, k))
    v = F.pad(v, (0, v_width - value_dim)).contiguous().unsqueeze(1).expand(-1, num_parts, -1, -1)
    outputs = []
    # no split without chunk_size: a traced split by the query count would fix that count in
    # an ONNX graph (a static Split), and the graph would fail at other image sizes
    for q_chunk in q.split(chunk_size, dim=2) if chunk_size else (q,):
        attn = F.scaled_dot_product_attention(q_chunk, k, v, scale=scale)
        outputs.append(_mix(pi, attn).to(out_dtype))
    return _cat(outputs)[..., :value_dim]


def _cat(outputs):
    """The chunks' outputs joined along the queries (no copy for one chunk)."""
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _output_dtype(q):
    """The type the attention's result has: autocast's when it is on, else the inputs'."""
    device_type = q.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return q.dtype


def _no_autocast(device_type):
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _at_least_fp32(t):
    return t.float() if t.dtype in _LOW_PRECISION else t


def _mix(pi, parts):
    """``sum_n pi_n parts_n`` in fp32 (or fp64), whatever autocast says. pi (B, N),
    parts (B, N, ...)."""
    with _no_autocast(parts.device.type):
        return torch.einsum("bn,bn...->b...", _at_least_fp32(pi), _at_least_fp32(parts))


def sdpa_widths(device_type, qk_dim, value_dim):
    """(q/k width, v width) to zero-pad to for ``scaled_dot_product_attention`` on a device.

    On CPU the fused (flash) kernel needs q, k and v of one width, a multiple of 8: all three are
    padded to it (Euclidean q'/k' of width d + 1 then cost up to ``value_dim`` per product). On
    CUDA the memory-efficient kernel takes q/k and v of different widths, each a multiple of 8:
    q/k are not padded to the value width there.
    """
    if device_type == "cpu":
        width = 8 * math.ceil(max(qk_dim, value_dim) / 8)
        return width, width
    return 8 * math.ceil(qk_dim / 8), 8 * math.ceil(value_dim / 8)


def _mixed_chunk(q, k, v, pi, scale):
    """Mix the N softmaxes first, then one product with V: N*L*S*d + L*S*Cv multiply-adds
    instead of N*L*S*(d + Cv). q (B, N, Lc, E), k (B, N, S, E), v (B, S, Cv) -> (B, Lc, Cv)."""
    return _mix(pi, torch.softmax(scale * (q @ k.transpose(-1, -2)), dim=-1)) @ v


def _augmented(q, k, similarity):
    """For "euclidean", ``q' = [2q, 1]`` and ``k' = [k, -||k||^2]``, so that
    ``<q', k'> = -||q - k||^2 + ||q||^2`` (the last term is constant over keys, so the softmax
    is unchanged). q (B, N, L, d), k (B, N, S, d)."""
    if similarity == "dot":
        return q, k
    q = torch.cat([2 * q, q.new_ones(q.shape[:-1] + (1,))], dim=-1)
    k = torch.cat([k, -(k**2).sum(-1, keepdim=True)], dim=-1)
    return q, k


class MixtureWeights(nn.Module):
    """
    The MoS prior ``pi = softmax_n(W^T kbar)``: one N-way distribution per image, from the mean
    key ``kbar`` over all positions; ``W`` is a learnable ``C x N`` matrix.
    """

    def __init__(self, channels, num_parts):
        super().__init__()
        self.proj = nn.Linear(channels, num_parts, bias=False)

    def forward(self, k):
        """k: (B, C, H, W) key map -> (B, N) mixture weights."""
        return torch.softmax(self.proj(k.mean(dim=(2, 3))), dim=-1)


class MoSAttention(nn.Module):
    """
    MoS attention between two feature maps: queries from ``query_map``, keys and values from
    ``key_map``, all three 1x1-conv projections; ``pi`` from the mean key (:class:`MixtureWeights`).
    The building block of FPT's Self-Transformer (``key_map is query_map``) and Grounding
    Transformer (``key_map`` is a coarser level).
    """

    def __init__(
        self,
        in_channels,
        inner_channels=None,
        num_parts=2,
        similarity="dot",
        scale=None,
        kv_pool=1,
        impl="sdpa",
        chunk_size=None,
    ):
        """
        Args:
            in_channels (int): channels C of both maps and of the output (values keep C).
            inner_channels (int or None): width of queries and keys (default: C); split into
                ``num_parts`` parts.
            num_parts (int): N, the number of softmaxes in the mixture.
            similarity (str): "dot" or "euclidean", see :func:`mos_attention`.
            scale (float or None): temperature, default ``1 / sqrt(inner_channels / N)``.
            kv_pool (int): average-pool ``key_map`` with this kernel and stride before projecting
                keys and values (1: none); cuts attention cost by ``kv_pool**2``.
            impl (str), chunk_size (int or None): see :func:`mos_attention`.
        """
        super().__init__()
        inner_channels = inner_channels or in_channels
        check_choice("similarity", similarity, SIMILARITIES)
        check_choice("attention impl", impl, ATTENTION_IMPLS)
        if num_parts < 1 or inner_channels % num_parts != 0:
            raise ValueError(
                f"inner_channels={inner_channels} must be divisible by num_parts={num_parts} >= 1"
            )
        if kv_pool < 1:
            raise ValueError(f"kv_pool={kv_pool} must be an integer >= 1")
        self.query = nn.Conv2d(in_channels, inner_channels, 1)
        self.key = nn.Conv2d(in_channels, inner_channels, 1)
        self.value = nn.Conv2d(in_channels, in_channels, 1)
        # with one part, pi = 1: no mixture weights to learn
        self.mixture = MixtureWeights(inner_channels, num_parts) if num_parts > 1 else None
        self.similarity = similarity
        self.scale = scale
        self.kv_pool = kv_pool
        self.impl = impl
        self.chunk_size = chunk_size

    def project(self, query_map, key_map):
        """
        Returns q (B, Ci, H, W), k (B, Ci, h, w), v (B, C, h, w) and pi (B, N), where (h, w) is
        ``key_map``'s size after ``kv_pool``.
        """
        if self.kv_pool > 1:
            key_map = F.avg_pool2d(key_map, self.kv_pool, self.kv_pool, ceil_mode=True)
        k = self.key(key_map)
        pi = self.mixture(k) if self.mixture is not None else k.new_ones(k.shape[0], 1)
        return self.query(query_map), k, self.value(key_map), pi

    def attend(self, q, k, v, pi, impl=None):
        """q (B, L, Ci), k (B, S, Ci), v (B, S, C), pi (B, N) -> (B, L, C); ``impl`` overrides
        the module's kernel."""
        impl = impl or self.impl
        return mos_attention(q, k, v, pi, self.similarity, self.scale, impl, self.chunk_size)

    def forward(self, query_map, key_map):
        """(B, C, H, W), (B, C, h, w) -> (B, C, H, W): every query attends to every key."""
        q, k, v, pi = self.project(query_map, key_map)
        out = self.attend(*(t.flatten(2).transpose(1, 2) for t in (q, k, v)), pi)
        return out.transpose(1, 2).reshape(query_map.shape[0], -1, *query_map.shape[-2:])
