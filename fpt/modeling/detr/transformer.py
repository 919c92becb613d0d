"""DETR's encoder-decoder transformer (post-norm), with optional iRPE in the encoder self-attention.

Parameter names are official DETR's (``facebookresearch/detr`` ``models/transformer.py``) and
Cream's DETR-with-iRPE (``encoder.layers.{i}.self_attn.rpe_{q,k,v}.*``), so their checkpoints load
by name. Sequences are (L, B, C), sequence first, as in DETR.
"""

import copy

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from fpt.layers.irpe import add_into, add_irpe_logits, build_rpe, parse_rpe_spec

__all__ = [
    "RPEMultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerDecoder",
    "Transformer",
]


def _masked_value(dtype):
    """The logit bias of a masked key: half of ``dtype``'s lowest value. Not -inf, so that a
    query with no valid key gives no NaN; not the lowest value itself, so that adding the
    logits, iRPE terms or another mask (each above half of it) stays finite (in fp16: -32752,
    where -65504 plus an iRPE term below -16 overflowed to -inf)."""
    return torch.finfo(dtype).min / 2


def _padding_bias(key_padding_mask, attn_mask, dtype):
    """Additive (B, 1, L or 1, S) mask: :func:`_masked_value` on padded keys plus
    ``attn_mask``, no lower than :func:`_masked_value` (a key masked twice too); or None."""
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
        bias = bias.masked_fill(key_padding_mask, _masked_value(dtype))[:, None, None, :]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=dtype).masked_fill(
                attn_mask, _masked_value(dtype)
            )
        bias = attn_mask.to(dtype) if bias is None else bias + attn_mask.to(dtype)
        bias = bias.clamp(min=_masked_value(dtype))
    return bias


class RPEMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (same parameters and math) with iRPE terms.

    Without ``rpe`` it equals ``nn.MultiheadAttention`` on the same weights. With ``rpe`` the
    q/k terms are added to the logits before the masks, the v term to the output after the
    attention dropout (Cream's order; see :mod:`fpt.layers.irpe`). Without a v term the
    attention runs through ``F.scaled_dot_product_attention`` (the iRPE q/k terms and the padding
    in its additive mask); with one, explicitly (the v term needs the attention weights).

    Args:
        embed_dim (int): C.
        num_heads (int): heads; head_dim = C / num_heads.
        dropout (float): attention-weight dropout.
        rpe (str, RPESpec or None): iRPE spec, e.g. "rpe-2.0-product-ctx-1-k" (skip = 0).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, rpe=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.rpe = parse_rpe_spec(rpe)
        self.rpe_q, self.rpe_k, self.rpe_v = build_rpe(self.rpe, self.head_dim, num_heads)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, hw=None, key_padding_mask=None, attn_mask=None):
        """
        Args:
            query (Tensor): (L, B, C). key, value (Tensor): (S, B, C).
            hw (tuple[int, int] or None): the (H, W) token grid of the sequence (H W = L = S),
                needed with iRPE.
            key_padding_mask (Tensor or None): (B, S) bool, True = padded key.
            attn_mask (Tensor or None): (L, S) additive float or bool (True = masked).
        Returns:
            (Tensor (L, B, C), None): the output; no attention weights (API of
            ``nn.MultiheadAttention(need_weights=False)``).
        """
        L, B, C = query.shape
        H, D = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def heads(x, w, b):  # (N, B, C) -> (B, H, N, D)
            return F.linear(x, w, b).view(x.shape[0], B, H, D).permute(1, 2, 0, 3)

        q, k, v = heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)
        scale = D**-0.5
        bias = _padding_bias(key_padding_mask, attn_mask, q.dtype)
        if self.rpe_q is not None or self.rpe_k is not None:
            if hw is None:
                raise ValueError("RPEMultiheadAttention with iRPE needs hw=(H, W) of the tokens")
            rpe_terms = add_irpe_logits(
                None,
                q * scale if self.rpe_k is not None else None,
                k * scale if self.rpe_q is not None else None,
                self.rpe_q,
                self.rpe_k,
                hw,
            )
            bias = add_into(rpe_terms, bias)
        dropout = self.dropout if self.training else 0.0
        if self.rpe_v is None:
            if bias is not None:
                bias = bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        else:
            if hw is None:
                raise ValueError("RPEMultiheadAttention with iRPE needs hw=(H, W) of the tokens")
            logits = add_into((q * scale) @ k.transpose(-2, -1), bias)
            attn = F.dropout(logits.softmax(dim=-1), dropout, self.training)
            out = attn @ v + self.rpe_v(attn, hw)
        out = out.permute(2, 0, 1, 3).reshape(L, B, C)
        return self.out_proj(out), None

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, rpe={self.rpe}"


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: self-attention (q = k = src + pos, v = src), FFN.

    Args:
        d_model (int), nhead (int), dim_feedforward (int), dropout (float): as DETR.
        rpe (str or None): iRPE spec of the self-attention.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, rpe=None):
        super().__init__()
        self.self_attn = RPEMultiheadAttention(d_model, nhead, dropout=dropout, rpe=rpe)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src, hw, src_key_padding_mask=None, pos=None):
        """src, pos: (L, B, C); hw: the (H, W) grid; src_key_padding_mask: (B, L) -> (L, B, C)."""
        q = k = src if pos is None else src + pos
        src2 = self.self_attn(q, k, src, hw=hw, key_padding_mask=src_key_padding_mask)[0]
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class TransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention over the queries, cross-attention to the
    memory (keys memory + pos), FFN. ``nn.MultiheadAttention`` for both (no iRPE: queries have
    no position on the grid)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
        """tgt, query_pos: (Q, B, C); memory, pos: (L, B, C); mask (B, L) -> (Q, B, C)."""
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q, k, value=tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self.multihead_attn(
            query=tgt + query_pos,
            key=memory + pos,
            value=memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


def _clones(layer, n):
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


def _run_layer(layer, use_checkpoint, *args, **kwargs):
    """``layer(*args, **kwargs)``; with ``use_checkpoint`` while gradients are recorded, through
    activation checkpointing (its activations are recomputed in the backward pass instead of
    kept; dropout draws the same masks both times, so gradients are unchanged)."""
    if use_checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False, **kwargs)
    return layer(*args, **kwargs)


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerEncoderLayer` (each with its own iRPE tables); no final norm.
    ``use_checkpoint``: activation checkpointing of every layer (see :class:`Transformer`)."""

    def __init__(self, encoder_layer, num_layers, use_checkpoint=False):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.use_checkpoint = use_checkpoint

    def forward(self, src, hw, src_key_padding_mask=None, pos=None):
        for layer in self.layers:
            src = _run_layer(
                layer,
                self.use_checkpoint,
                src,
                hw,
                src_key_padding_mask=src_key_padding_mask,
                pos=pos,
            )
        return src


class TransformerDecoder(nn.Module):
    """A stack of :class:`TransformerDecoderLayer`; ``norm`` is applied to every layer's output,
    all of which are returned (the heads run on each, for the auxiliary losses).
    ``use_checkpoint``: activation checkpointing of every layer (see :class:`Transformer`)."""

    def __init__(self, decoder_layer, num_layers, norm, use_checkpoint=False):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.norm = norm
        self.use_checkpoint = use_checkpoint

    def forward(self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None):
        """-> (num_layers, Q, B, C)."""
        intermediate = []
        for layer in self.layers:
            tgt = _run_layer(
                layer,
                self.use_checkpoint,
                tgt,
                memory,
                memory_key_padding_mask,
                pos=pos,
                query_pos=query_pos,
            )
            intermediate.append(self.norm(tgt))
        return torch.stack(intermediate)


class Transformer(nn.Module):
    """DETR's transformer: post-norm encoder and decoder, every decoder output normalized.

    Args:
        d_model (int): model width (256).
        nhead (int): attention heads (8).
        num_encoder_layers (int), num_decoder_layers (int): 6 and 6.
        dim_feedforward (int): FFN width (2048).
        dropout (float): dropout of attention weights, FFN and residual branches (0.1).
        enc_rpe (str or None): iRPE spec for every encoder self-attention, e.g.
            "rpe-2.0-product-ctx-1-k" (DETR-with-iRPE); None: plain DETR.
        use_checkpoint (bool): activation checkpointing of every encoder and decoder layer
            while training (as detrex's ``use_checkpoint``): each layer's activations are
            recomputed in the backward pass instead of kept, for long schedules or large
            batches on smaller GPUs; same gradients, one more forward pass of the transformer.

    After construction every parameter with more than one dimension (iRPE tables included) is
    re-initialized with ``xavier_uniform_``, as DETR does.
    """

    def __init__(
        self,
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        enc_rpe=None,
        use_checkpoint=False,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.enc_rpe = parse_rpe_spec(enc_rpe)
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, rpe=self.enc_rpe),
            num_encoder_layers,
            use_checkpoint,
        )
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout),
            num_decoder_layers,
            nn.LayerNorm(d_model),
            use_checkpoint,
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed):
        """
        Args:
            src (Tensor): (B, C, h, w) projected backbone features.
            mask (Tensor): (B, h, w) bool, True on padding.
            query_embed (Tensor): (Q, C) learned query positions.
            pos_embed (Tensor): (B, C, h, w) position encoding.
        Returns:
            hs (Tensor): (num_decoder_layers, B, Q, C) normalized decoder outputs.
            memory (Tensor): (B, C, h, w) encoder output.
        """
        B, C, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, B, 1)
        mask = mask.flatten(1)
        memory = self.encoder(src, (h, w), src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(
            torch.zeros_like(query_embed),
            memory,
            memory_key_padding_mask=mask,
            pos=pos_embed,
            query_pos=query_embed,
        )
        return hs.transpose(1, 2), memory.permute(1, 2, 0).view(B, C, h, w)
