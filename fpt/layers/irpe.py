"""Image relative position encoding (iRPE; Wu, Peng, Chen, Fu, Chao, ICCV 2021), in pure PyTorch.

iRPE adds learned tables to self-attention, indexed by a *bucket* of the 2-D offset between a
query token and a key token. Parameter names, shapes and math follow the official code
(``microsoft/Cream`` ``iRPE/*/irpe.py``), so its checkpoints load by name; three things differ:

* no custom CUDA op: the contextual q/k terms are a ``torch.gather`` from a (B, H, L, buckets)
  lookup, the v term scatters the attention weights into buckets (``scatter_add_``) and multiplies
  by the table, so no (L, L, head_dim) tensor is ever built;
* the token grid (H, W) is always explicit (Cream guesses a square grid and calls the rest
  "skip" tokens when it is not given, microsoft/Cream#220);
* :func:`parse_rpe_spec` is strict (Cream silently drops unknown letters of ``rpe_on``).

A spec string ``rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}``, e.g.
``rpe-2.0-product-ctx-1-k``, picks:

* ``ratio``: the piecewise index function's alpha = ratio, beta = 2 ratio, gamma = 8 ratio;
* ``method``: ``euc`` (Euclidean distance), ``quant`` (squared distance), ``cross`` (separate
  row and column tables, summed), ``product`` (one table over (row, column) offset pairs);
* ``mode``: ``bias`` (a learned scalar per bucket) or ``ctx`` (contextual: a learned vector per
  bucket, dotted with the query / key, or summed into the output for v);
* ``shared_head``: ``1`` one table for all heads, ``0`` one per head;
* ``rpe_on``: which of q, k, v get a table (``k`` is the paper's DETR setting).

Where the terms enter attention (s = head_dim^-0.5; b(i, j) the bucket of p_i - p_j)::

    logits[i, j] = s q_i . k_j + rpe_k(s q)[i, j] + rpe_q(s k)[j, i]     (before masking/softmax)
    out_i        = sum_j a_ij v_j + sum_j a_ij Wv[b(i, j)]                  (rpe_v, after dropout)

:func:`irpe_qk_term_reference` and :func:`irpe_v_term_reference` are Cream's formulation
(flat indexing, a materialized table); the tests hold the fast ones equal to them.
"""

import collections
import math
import re
import threading
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "METHODS",
    "MODES",
    "RPESpec",
    "parse_rpe_spec",
    "piecewise_index",
    "relative_positions",
    "bucket_ids",
    "num_buckets",
    "clear_bucket_cache",
    "IRPE",
    "IRPECross",
    "build_rpe",
    "add_irpe_logits",
    "add_into",
    "irpe_qk_term_reference",
    "irpe_v_term_reference",
]

METHODS = ("euc", "quant", "cross", "product")
MODES = ("bias", "ctx")
_SPEC_FORMAT = "rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}"
_RATIO = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# ---------------------------------------------------------------------------------------------
# the spec string
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RPESpec:
    """A parsed iRPE spec; ``str(spec)`` is the canonical string and parses back equal.

    Attributes:
        ratio (float): alpha = ratio, beta = 2 ratio, gamma = 8 ratio.
        method (str): one of :data:`METHODS`.
        mode (str): one of :data:`MODES`.
        shared_head (bool): one table for all heads.
        rpe_on (str): the inputs with a table, letters of "qkv" in that order (e.g. "k", "qkv").
    """

    ratio: float
    method: str
    mode: str
    shared_head: bool
    rpe_on: str

    def __str__(self):
        return _SPEC_FORMAT.format(
            ratio=repr(float(self.ratio)),
            method=self.method,
            mode=self.mode,
            shared_head=int(self.shared_head),
            rpe_on=self.rpe_on,
        )


def parse_rpe_spec(spec):
    """Parse an official iRPE spec string, e.g. ``"rpe-2.0-product-ctx-1-k"``.

    Args:
        spec (str, RPESpec or None): None disables iRPE; an :class:`RPESpec` is returned as is.
    Returns:
        RPESpec or None.
    Raises:
        ValueError: one line, ``invalid iRPE spec '<spec>': <field> '<value>' ...; allowed: ...``.
    """
    if spec is None or isinstance(spec, RPESpec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(
            f"invalid iRPE spec {spec!r}: expected a string such as 'rpe-2.0-product-ctx-1-k' "
            f"or None, got {type(spec).__name__}"
        )

    def fail(message):
        raise ValueError(f"invalid iRPE spec {spec!r}: {message}")

    if spec == "":
        fail("empty string; use None (null on the command line) to disable iRPE")
    fields = spec.split("-")
    if len(fields) != 6:
        fail(f"expected 6 fields {_SPEC_FORMAT}, got {len(fields)}")
    prefix, ratio_text, method, mode, shared_text, rpe_on = fields
    if prefix != "rpe":
        fail(f"first field {prefix!r} must be 'rpe' ({_SPEC_FORMAT})")
    # a plain decimal number (Python's float() would also take "2_0", " 2.0", "nan", "inf")
    ratio = float(ratio_text) if _RATIO.fullmatch(ratio_text) else None
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        fail(f"ratio {ratio_text!r} is not usable; allowed: a positive float such as 1.9 or 2.0")
    if method not in METHODS:
        fail(f"method {method!r} is unknown; allowed: {', '.join(METHODS)}")
    if mode not in MODES:
        fail(f"mode {mode!r} is unknown; allowed: {', '.join(MODES)}")
    if shared_text not in ("0", "1"):
        fail(f"shared_head {shared_text!r} is not a flag; allowed: 0 (per head), 1 (shared)")
    letters = set(rpe_on)
    if not rpe_on or not letters <= set("qkv") or len(letters) != len(rpe_on):
        fail(
            f"rpe_on {rpe_on!r} is not usable; allowed: non-empty letters from q, k, v, "
            "each at most once"
        )
    if mode == "bias" and "v" in letters:
        fail(f"rpe_on {rpe_on!r}: mode bias cannot be used on v; use ctx or drop v")
    return RPESpec(
        ratio=ratio,
        method=method,
        mode=mode,
        shared_head=shared_text == "1",
        rpe_on="".join(c for c in "qkv" if c in letters),
    )


# ---------------------------------------------------------------------------------------------
# bucket ids
# ---------------------------------------------------------------------------------------------
def _coefficients(ratio):
    """(alpha, beta, gamma, beta_int) of a ratio: 1 : 2 : 8, and int(beta)."""
    alpha, beta, gamma = float(ratio), 2.0 * ratio, 8.0 * ratio
    return alpha, beta, gamma, int(beta)


@torch.no_grad()
def piecewise_index(x, ratio, dtype=torch.long):
    """The piecewise index g of iRPE, elementwise::

        g(x) = round(x)                                                     if |x| <= alpha
        g(x) = sign(x) min(beta, round(alpha + ln(|x|/alpha) / ln(gamma/alpha) (beta - alpha)))
                                                                            otherwise

    cast to ``dtype`` (truncating toward zero, so |g| <= int(beta) when beta is not an integer).

    Args:
        x (Tensor): relative positions or distances, any shape, integer or float.
        ratio (float): alpha = ratio, beta = 2 ratio, gamma = 8 ratio.
    Returns:
        Tensor: ``dtype``, same shape as ``x``.
    """
    alpha, beta, gamma, _ = _coefficients(ratio)
    x_abs = x.abs()
    far = x_abs > alpha
    # elementwise (no boolean indexing: traceable, and runs on the meta device)
    x_abs_far = torch.where(far, x_abs, torch.full_like(x_abs, alpha))
    g_far = torch.sign(x) * (
        alpha + torch.log(x_abs_far / alpha) / math.log(gamma / alpha) * (beta - alpha)
    ).round().clip(max=beta)
    near = x.round() if x.is_floating_point() else x
    return torch.where(far, g_far.to(dtype), near.to(dtype))


def relative_positions(height, width, device=None):
    """Offsets of every (query, key) pair of an H x W grid, query minus key.

    Token t sits at (t // W, t % W). Returns an int64 tensor (L, L, 2), L = H W, holding
    (d_row, d_col).
    """
    rows = torch.arange(height, device=device).view(height, 1).expand(height, width)
    cols = torch.arange(width, device=device).view(1, width).expand(height, width)
    pos = torch.stack([rows, cols], dim=2).reshape(height * width, 2)
    return pos[:, None, :] - pos[None, :, :]


def _bucket_ids_direct(height, width, method, ratio, device=None):
    """Bucket ids (L, L) of an H x W grid, no skip tokens (see :func:`bucket_ids`)."""
    diff = relative_positions(height, width, device)
    beta_int = _coefficients(ratio)[3]
    if method == "euc":
        return piecewise_index(diff.square().sum(2).float().sqrt().round(), ratio) + beta_int
    if method == "quant":
        return piecewise_index(diff.square().sum(2), ratio) + beta_int
    if method == "cross_rows":
        return piecewise_index(diff[:, :, 0], ratio) + beta_int
    if method == "cross_cols":
        return piecewise_index(diff[:, :, 1], ratio) + beta_int
    if method == "product":
        side = 2 * beta_int + 1
        rows = piecewise_index(diff[:, :, 0], ratio) + beta_int
        cols = piecewise_index(diff[:, :, 1], ratio) + beta_int
        return rows * side + cols
    raise ValueError(
        f"iRPE bucket method {method!r} is unknown; allowed: euc, quant, cross_rows, "
        "cross_cols, product"
    )


def num_buckets(method, ratio, skip=0):
    """Number of buckets (table columns) of one table: (2 int(beta) + 1)^2 for ``product``,
    2 int(beta) + 1 otherwise (per table for ``cross``), plus one for skip tokens.

    ``euc`` and ``quant`` never use buckets [0, int(beta)) but allocate them, as Cream does
    (checkpoint shapes)."""
    side = 2 * _coefficients(ratio)[3] + 1
    return (side * side if method == "product" else side) + (1 if skip > 0 else 0)


class _BucketCache:
    """Bucket ids per (H, W, method, ratio, device), cut from the largest grid computed so far.

    Ids depend only on offsets, so the ids of an h x w grid are the ``[:h, :w, :h, :w]`` crop of
    any larger grid's ids (as a 4-D (H, W, H, W) tensor). Crops are kept in an LRU bounded in
    bytes (DETR meets many padded grids; one 42 x 42 grid's ids are 24 MiB).
    """

    def __init__(self, max_bytes=256 * 2**20):
        self.max_bytes = max_bytes
        self._largest = {}  # (method, ratio, device) -> ids (H, W, H, W)
        self._crops = collections.OrderedDict()  # (h, w, method, ratio, device) -> ids (L, L)
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, height, width, method, ratio, device):
        device = torch.device(device)
        key = (height, width, method, float(ratio), device)
        with self._lock:
            ids = self._crops.get(key)
            if ids is not None:
                self._crops.move_to_end(key)
                return ids
            base_key = key[2:]
            base = self._largest.get(base_key)
            if base is None or base.shape[0] < height or base.shape[1] < width:
                H = max(height, 0 if base is None else base.shape[0])
                W = max(width, 0 if base is None else base.shape[1])
                base = _bucket_ids_direct(H, W, method, ratio, device).view(H, W, H, W)
                self._largest[base_key] = base
            ids = base[:height, :width, :height, :width].reshape(height * width, -1)
            ids = ids.contiguous()
            self._crops[key] = ids
            self._bytes += ids.numel() * ids.element_size()
            while self._bytes > self.max_bytes and len(self._crops) > 1:
                _, old = self._crops.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
            return ids

    def clear(self):
        with self._lock:
            self._largest.clear()
            self._crops.clear()
            self._bytes = 0


_CACHE = _BucketCache()


def clear_bucket_cache():
    """Forget every cached bucket table (tests; freeing device memory)."""
    _CACHE.clear()


def bucket_ids(height, width, method, ratio, device=None, skip=0):
    """Bucket id of every (query, key) pair of ``skip`` extra tokens followed by an H x W grid.

    Args:
        height, width (int): the token grid.
        method (str): ``euc``, ``quant``, ``product``, or ``cross_rows`` / ``cross_cols`` (the
            two tables of ``cross``).
        ratio (float): see :func:`piecewise_index`.
        device: where the ids live (cached per device).
        skip (int): leading non-grid tokens (e.g. cls); every pair involving one gets the extra
            bucket ``num_buckets(method, ratio)`` (the last id).
    Returns:
        Tensor: int64 (L, L), L = skip + H W; cached, do not modify.
    """
    if torch.jit.is_tracing():  # ids from the traced grid size, not baked into the trace
        ids = _bucket_ids_direct(height, width, method, ratio, device)
    else:
        ids = _CACHE.get(height, width, method, ratio, device or "cpu")
    if skip > 0:
        extra = num_buckets(method, ratio)
        padded = ids.new_full((skip + ids.shape[0], skip + ids.shape[1]), extra)
        padded[skip:, skip:] = ids
        ids = padded
    return ids


# ---------------------------------------------------------------------------------------------
# the terms: fast (gather / scatter) and reference (Cream's flat index / materialized table)
# ---------------------------------------------------------------------------------------------
def irpe_qk_term_reference(x, table, ids):
    """Cream's contextual q/k term: ``(x @ W)`` flattened and indexed with flat bucket ids.

    Args:
        x (Tensor): (B, H, L, D). table (Tensor): (heads_p, D, nb). ids (Tensor): (L, L).
    Returns:
        Tensor: (B, H, L, L), ``out[b, h, i, j] = x[b, h, i] . table[h', :, ids[i, j]]``.
    """
    B, H, L, _ = x.shape
    nb = table.shape[-1]
    lookup = torch.matmul(x, table)  # (B, H, L, nb)
    flat = (ids + torch.arange(L, device=ids.device)[:, None] * nb).flatten()
    return lookup.flatten(2)[:, :, flat].view(B, H, L, L)


def irpe_v_term_reference(attn, table, ids):
    """Cream's contextual v term with the table materialized per pair, (heads_p, L, L, D).

    Args:
        attn (Tensor): (B, H, L, L). table (Tensor): (heads_p, nb, D). ids (Tensor): (L, L).
    Returns:
        Tensor: (B, H, L, D), ``out[b, h, i] = sum_j attn[b, h, i, j] table[h', ids[i, j]]``.
    """
    L = ids.shape[0]
    weight = table[:, ids.flatten()].view(table.shape[0], L, L, -1)  # (heads_p, L, L, D)
    return torch.matmul(attn.permute(1, 2, 0, 3), weight).permute(2, 0, 1, 3)


def _qk_term(x, table, ids):
    """Fast :func:`irpe_qk_term_reference`: gather from the (B, H, L, nb) lookup."""
    lookup = torch.matmul(x, table)  # (B, H, L, nb)
    return lookup.gather(-1, ids.expand(*lookup.shape[:-1], ids.shape[-1]))


def _v_term(attn, table, ids):
    """Fast :func:`irpe_v_term_reference`: attention weights summed per bucket, then @ table."""
    nb = table.shape[-2]
    acc_dtype = torch.float32 if attn.dtype in (torch.float16, torch.bfloat16) else attn.dtype
    per_bucket = attn.new_zeros(*attn.shape[:-1], nb, dtype=acc_dtype).scatter_add_(
        -1, ids.expand_as(attn), attn.to(acc_dtype)
    )  # (B, H, L, nb)
    return torch.matmul(per_bucket.to(attn.dtype), table.to(attn.dtype))


class IRPE(nn.Module):
    """One iRPE table for q, k or v of a multi-head attention.

    Args:
        head_dim (int): D, channels per head.
        num_heads (int): attention heads.
        mode (str): "bias" or "ctx".
        method (str): "euc", "quant", "product", "cross_rows" or "cross_cols".
        ratio (float): see :func:`piecewise_index`.
        transposed (bool): True for q and k (the table is looked up by a per-token feature and
            the output is an (L, L) logit term), False for v (the table is summed with the
            attention weights into the output). Cream's name.
        shared_head (bool): one table for all heads.
        skip (int): leading tokens outside the grid (e.g. cls), sharing one extra bucket.

    Parameters (Cream's names): ``lookup_table_bias`` (heads_p, nb) for bias;
    ``lookup_table_weight`` (heads_p, D, nb) for ctx q/k, (heads_p, nb, D) for ctx v;
    heads_p = 1 if shared_head else num_heads. Zero-initialised.
    """

    def __init__(
        self,
        head_dim,
        num_heads=8,
        mode="ctx",
        method="product",
        ratio=1.9,
        transposed=True,
        shared_head=True,
        skip=0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"IRPE mode {mode!r} is unknown; allowed: {', '.join(MODES)}")
        if mode == "bias" and not transposed:
            raise ValueError("IRPE: mode bias cannot be used on v; use ctx")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.mode = mode
        self.method = method
        self.ratio = float(ratio)
        self.transposed = transposed
        self.shared_head = shared_head
        self.skip = skip
        self.num_buckets = num_buckets(method, ratio, skip)
        heads = 1 if shared_head else num_heads
        if mode == "bias":
            self.lookup_table_bias = nn.Parameter(torch.zeros(heads, self.num_buckets))
        elif transposed:
            self.lookup_table_weight = nn.Parameter(torch.zeros(heads, head_dim, self.num_buckets))
        else:
            self.lookup_table_weight = nn.Parameter(torch.zeros(heads, self.num_buckets, head_dim))

    def reset_parameters(self):
        for p in self.parameters():
            nn.init.zeros_(p)

    def bucket_ids(self, length, hw, device):
        """Cached (L, L) ids for ``skip`` tokens + the (H, W) grid; checks L = skip + H W."""
        height, width = hw
        if length != self.skip + height * width:
            raise ValueError(
                f"iRPE: sequence length L={length} != skip + H*W with H={height}, W={width}, "
                f"skip={self.skip}"
            )
        return bucket_ids(height, width, self.method, self.ratio, device, self.skip)

    def forward(self, x, hw):
        """
        Args:
            x (Tensor): q / k (scaled by head_dim^-0.5) as (B, H, L, D) when ``transposed``;
                the attention weights (B, H, L, L) for v.
            hw (tuple[int, int]): the token grid (H, W) of the L - skip grid tokens.
        Returns:
            Tensor: q / k: the logit term (B, H, L, L) for ctx, (heads_p, L, L) for bias, with
            ``out[.., i, j]`` looked up at bucket b(i, j); v: (B, H, L, D).
        """
        ids = self.bucket_ids(x.shape[-2], hw, x.device)
        if self.mode == "bias":
            return self.lookup_table_bias[:, ids]
        if self.transposed:
            return _qk_term(x, self.lookup_table_weight, ids)
        return _v_term(x, self.lookup_table_weight, ids)

    def extra_repr(self):
        return (
            f"mode={self.mode}, method={self.method}, ratio={self.ratio}, "
            f"num_buckets={self.num_buckets}, shared_head={self.shared_head}, "
            f"transposed={self.transposed}, skip={self.skip}"
        )


class IRPECross(nn.Module):
    """The ``cross`` method: a row table (``rp_rows``) and a column table (``rp_cols``), each an
    :class:`IRPE` on one offset component; their terms are summed. Same arguments as
    :class:`IRPE` (without ``method``)."""

    def __init__(
        self,
        head_dim,
        num_heads=8,
        mode="ctx",
        ratio=1.9,
        transposed=True,
        shared_head=True,
        skip=0,
    ):
        super().__init__()
        kwargs = dict(
            head_dim=head_dim,
            num_heads=num_heads,
            mode=mode,
            ratio=ratio,
            transposed=transposed,
            shared_head=shared_head,
            skip=skip,
        )
        self.rp_rows = IRPE(method="cross_rows", **kwargs)
        self.rp_cols = IRPE(method="cross_cols", **kwargs)

    def reset_parameters(self):
        self.rp_rows.reset_parameters()
        self.rp_cols.reset_parameters()

    def forward(self, x, hw):
        """See :meth:`IRPE.forward`."""
        return add_into(self.rp_rows(x, hw), self.rp_cols(x, hw))


def build_rpe(spec, head_dim, num_heads, skip=0):
    """The iRPE modules of one attention layer.

    Args:
        spec (str, RPESpec or None): see :func:`parse_rpe_spec`.
        head_dim, num_heads, skip: see :class:`IRPE`.
    Returns:
        (rpe_q, rpe_k, rpe_v): modules, None where the spec has no table (all None for None).
    """
    spec = parse_rpe_spec(spec)
    if spec is None:
        return None, None, None

    def make(letter):
        if letter not in spec.rpe_on:
            return None
        kwargs = dict(
            head_dim=head_dim,
            num_heads=num_heads,
            mode=spec.mode,
            ratio=spec.ratio,
            transposed=letter != "v",
            shared_head=spec.shared_head,
            skip=skip,
        )
        if spec.method == "cross":
            return IRPECross(**kwargs)
        return IRPE(method=spec.method, **kwargs)

    return make("q"), make("k"), make("v")


def add_irpe_logits(logits, q_scaled, k_scaled, rpe_q, rpe_k, hw):
    """Add the iRPE q and k terms to attention logits, in Cream's order (k-term first).

    Args:
        logits (Tensor or None): (B, H, L, L) pre-softmax logits; None: return the terms alone
            (no ``0 + term`` copy of an L x L tensor; None again without q/k tables).
        q_scaled, k_scaled (Tensor): (B, H, L, D) queries and keys times head_dim^-0.5 (only
            read where ``rpe_k`` / ``rpe_q`` is given).
        rpe_q, rpe_k (IRPE, IRPECross or None): the tables.
        hw (tuple[int, int]): the token grid.
    Returns:
        Tensor: (B, H, L, L) (a bias-mode term alone is (heads_p, L, L)).
    """
    fresh = False  # ``logits`` was made here: the q-term may be added into it
    if rpe_k is not None:
        term = rpe_k(q_scaled, hw)
        logits, fresh = (term, True) if logits is None else (logits + term, True)
    if rpe_q is not None:
        term = rpe_q(k_scaled, hw).transpose(-2, -1)
        if logits is None:
            logits = term
        else:
            logits = add_into(logits, term) if fresh else logits + term
    return logits


def add_into(x, y):
    """``x + y``, written into ``x`` when ``x`` is contiguous and has the result's shape and
    dtype (else a new tensor); ``y`` None returns ``x``.

    ``x`` must be an intermediate of the caller's own that nothing else reads and no autograd
    node saved (autograd raises if one did). The values are those of ``x + y``; on CPU it saves
    allocating and first touching an L x L tensor, which costs about 4x the add itself."""
    if y is None:
        return x
    if (
        x.is_contiguous()
        and x.shape == torch.broadcast_shapes(x.shape, y.shape)
        and torch.result_type(x, y) == x.dtype
    ):
        return x.add_(y)
    return x + y
