"""Plain Vision Transformer backbone of ViTDet (Li, Mao, Girshick, He, ECCV 2022).

Same constructor arguments, parameter names and math as ``detectron2/modeling/backbone/vit.py``
(detectron2 main branch), so official ViTDet checkpoints load and give the same outputs, plus:

* four attention implementations, one argument ``attn_impl``: ``"sdpa_mask"`` runs
  :func:`torch.nn.functional.scaled_dot_product_attention` with the decomposed
  relative-position bias as an additive (N x N) mask; ``"sdpa_folded"`` folds the bias into the
  dot product (no mask, so SDPA can pick its flash / memory-efficient kernels; 2-5x less memory
  for global attention, but the head dim grows by the grid's height + width);
  ``"blocked"`` (:func:`fpt.layers.blocked_attention.blocked_rel_pos_attention`) computes
  blocks of query rows with the bias as the product's additive input and recomputes them in
  the backward pass (a fused kernel's memory with the plain head dim); ``"explicit"`` is the
  reference ``softmax(q k^T * scale + bias) v``. ``"auto"`` (default) picks per call, from
  measurements (``benchmarks/vit_attention.py``, ``benchmarks/train_step.py``, README): on CPU
  "blocked" where folding would at least double the head dim (global attention: 64 + 64 + 64
  channels at 1024 px) and "sdpa_folded" where it would not (14 x 14 windows), for training and
  inference alike; on other devices "sdpa_folded", the one that reaches the flash /
  memory-efficient kernels; with iRPE q/k tables "sdpa_mask" (neither folding nor blocking holds
  per-pair terms). (The flags ``use_sdpa`` / ``sdpa_rel_pos`` of the previous release are still
  accepted, with a deprecation warning.);
* optional iRPE tables in every attention (``rpe="rpe-2.0-product-ctx-1-k"``, see
  :mod:`fpt.layers.irpe`), zero-initialised so the model starts as the one without;
* activation checkpointing with :func:`torch.utils.checkpoint.checkpoint` (no fairscale).

Tokens are channels-last, (B, H, W, C), between blocks.
"""

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling import Backbone
from fvcore.nn import weight_init

from fpt.layers.drop_path import DropPath
from fpt.layers.irpe import add_irpe_logits, build_rpe, parse_rpe_spec
from fpt.layers.blocked_attention import blocked_rel_pos_attention
from fpt.layers.rel_pos import (
    add_decomposed_rel_pos,
    decomposed_rel_pos_terms,
    decomposed_rel_pos_bias,
    fold_decomposed_rel_pos,
    get_abs_pos,
    window_partition,
    window_unpartition,
)

__all__ = [
    "PatchEmbed",
    "Attention",
    "Mlp",
    "ResBottleneckBlock",
    "Block",
    "ViT",
    "get_vit_lr_decay_rate",
    "set_vit_attention_impl",
    "ATTN_IMPLS",
    "auto_attn_impl",
]

# the attention implementations (see the module docstring), all equal up to float rounding
ATTN_IMPLS = ("explicit", "sdpa_mask", "sdpa_folded", "blocked")


def auto_attn_impl(device, head_dim, grid):
    """What ``attn_impl="auto"`` runs for rel-pos attention on ``device`` over a token ``grid``
    (H, W): "blocked" on CPU when folding would at least double the head dim (H + W >= head_dim),
    else "sdpa_folded" (see the module docstring)."""
    return "blocked" if device.type == "cpu" and sum(grid) >= head_dim else "sdpa_folded"


logger = logging.getLogger(__name__)


class PatchEmbed(nn.Module):
    """Image to patch embedding: one strided conv. (B, C, H, W) -> (B, H/p, W/p, embed_dim)."""

    def __init__(
        self, kernel_size=(16, 16), stride=(16, 16), padding=(0, 0), in_chans=3, embed_dim=768
    ):
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding
        )

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention with optional decomposed relative position bias and iRPE.

    With s = head_dim^-0.5 and the token grid (H, W) of the input (a window's for window blocks)::

        logits = s q k^T + rel_h + rel_w + rpe_k(s q) + rpe_q(s k)^T      (B, heads, N, N)
        out    = softmax(logits) @ v + rpe_v(softmax(logits))               (B, heads, N, head_dim)

    the rel-pos bias being computed from the unscaled q (as upstream).

    Args:
        dim (int): channels C.
        num_heads (int): heads; head_dim = C / num_heads.
        qkv_bias (bool): bias in the qkv projection.
        use_rel_pos (bool): add the decomposed relative position bias.
        rel_pos_zero_init (bool): zero-init the rel-pos tables (else trunc-normal std 0.02).
        input_size (tuple[int, int]): token grid the rel-pos tables are made for.
        attn_impl (str): "auto" (default: per call, :func:`auto_attn_impl`; "sdpa_mask" with
            iRPE q/k tables), "sdpa_mask" (fused ``F.scaled_dot_product_attention``, the rel-pos
            bias as an additive (N x N) mask), "sdpa_folded" (the bias folded into q and k, see
            :func:`fold_decomposed_rel_pos`; no mask), "blocked" (blocks of query rows with
            recompute, see :func:`blocked_rel_pos_attention`; traced or compiled, it runs
            "sdpa_folded") or "explicit" (the reference).
            Without rel-pos, "sdpa_folded" and "blocked" are SDPA without a mask.
        rpe (str, RPESpec or None): iRPE spec, e.g. "rpe-2.0-product-ctx-1-k" (see
            :func:`fpt.layers.irpe.parse_rpe_spec`), or None. Modules ``rpe_q``, ``rpe_k``,
            ``rpe_v`` (None where the spec has no table), zero-initialised. "sdpa_mask" adds the
            q/k terms to the additive mask; with a v table the explicit path runs instead (SDPA
            returns no attention weights); "sdpa_folded" and "blocked" cannot hold iRPE
            (ValueError).
        use_sdpa, sdpa_rel_pos: deprecated spelling of ``attn_impl`` (see
            :func:`resolve_attn_impl`).
    """

    def __init__(
        self,
        dim,
        num_heads=8,
        qkv_bias=True,
        use_rel_pos=False,
        rel_pos_zero_init=True,
        input_size=None,
        attn_impl="auto",
        rpe=None,
        use_sdpa=None,
        sdpa_rel_pos=None,
    ):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.rpe = parse_rpe_spec(rpe)
        self.attn_impl = resolve_attn_impl(attn_impl, use_sdpa, sdpa_rel_pos, self.rpe)
        _check_rpe_impl(self.rpe, self.attn_impl)
        self.rpe_q, self.rpe_k, self.rpe_v = build_rpe(self.rpe, head_dim, num_heads)
        if self.attn_impl != "explicit" and self.rpe_v is not None:
            logger.info(
                f"Attention with iRPE {self.rpe}: the v table needs the attention weights, "
                "which SDPA does not return; this attention runs the explicit path"
            )

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

        self.use_rel_pos = use_rel_pos
        if self.use_rel_pos:
            if input_size is None:
                raise ValueError("Attention(use_rel_pos=True) needs input_size=(H, W)")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x):
        """x: (B, H, W, C) -> (B, H, W, C); (H, W) is the token grid of the iRPE buckets."""
        B, H, W, _ = x.shape
        N = H * W
        # q, k, v: (B, heads, N, head_dim)
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        impl = self.attn_impl if self.rpe_v is None else "explicit"  # rpe_v needs the weights
        if impl == "auto":
            impl = auto_attn_impl(x.device, v.shape[-1], (H, W))
        if impl == "blocked" and (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            impl = "sdpa_folded"  # the same math in ops that trace, count FLOPs and compile
        if impl in ("sdpa_folded", "blocked") and not self.use_rel_pos:
            x = F.scaled_dot_product_attention(q, k, v)
        elif impl == "sdpa_folded":
            head_dim = v.shape[-1]
            q, k, v = fold_decomposed_rel_pos(
                q, k, v, self.scale, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W)
            )
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)[..., :head_dim]
        elif impl == "blocked":
            rel_h, rel_w = decomposed_rel_pos_terms(
                q.reshape(B * self.num_heads, N, -1), self.rel_pos_h, self.rel_pos_w, (H, W), (H, W)
            )
            x = blocked_rel_pos_attention(
                q,
                k,
                v,
                rel_h.reshape(B, self.num_heads, N, H),
                rel_w.reshape(B, self.num_heads, N, W),
                self.scale,
            )
        elif impl != "explicit":
            bias = None
            if self.use_rel_pos:
                bias = decomposed_rel_pos_bias(
                    q.reshape(B * self.num_heads, N, -1),
                    self.rel_pos_h,
                    self.rel_pos_w,
                    (H, W),
                    (H, W),
                ).view(B, self.num_heads, N, N)
            bias = self._add_irpe_logits(bias, q, k, (H, W))
            if bias is not None:
                bias = bias.to(q.dtype)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:  # the reference formulation, with upstream's order of operations
            attn = ((q * self.scale) @ k.transpose(-2, -1)).view(B * self.num_heads, N, N)
            if self.use_rel_pos:
                attn = add_decomposed_rel_pos(
                    attn,
                    q.reshape(B * self.num_heads, N, -1),
                    self.rel_pos_h,
                    self.rel_pos_w,
                    (H, W),
                    (H, W),
                )
            attn = attn.view(B, self.num_heads, N, N)
            attn = self._add_irpe_logits(attn, q, k, (H, W)).softmax(dim=-1)
            x = attn @ v
            if self.rpe_v is not None:
                x = x + self.rpe_v(attn, (H, W))
        x = x.transpose(1, 2).reshape(B, H, W, -1)
        return self.proj(x)

    def _add_irpe_logits(self, logits, q, k, hw):
        """logits (B, heads, N, N) or None, plus the iRPE k- and q-terms of the unscaled q, k
        (B, heads, N, head_dim) on the grid ``hw``; None stays None without q/k tables."""
        if self.rpe_q is None and self.rpe_k is None:
            return logits
        return add_irpe_logits(
            logits,
            q * self.scale if self.rpe_k is not None else None,
            k * self.scale if self.rpe_q is not None else None,
            self.rpe_q,
            self.rpe_k,
            hw,
        )

    def extra_repr(self):
        rpe = None if self.rpe is None else str(self.rpe)
        return (
            f"num_heads={self.num_heads}, use_rel_pos={self.use_rel_pos}, "
            f"attn_impl={self.attn_impl!r}, rpe={rpe!r}"
        )


def resolve_attn_impl(attn_impl="auto", use_sdpa=None, sdpa_rel_pos=None, rpe=None):
    """The attention implementation: one of :data:`ATTN_IMPLS`, or "auto" (chosen per call by
    :func:`auto_attn_impl`), which is "sdpa_mask" for an attention with iRPE (``rpe``: its spec,
    None without): folding and blocking cannot hold its per-pair terms.

    ``use_sdpa`` / ``sdpa_rel_pos`` are the previous release's flags, accepted for this release
    with a ``FutureWarning``: ``use_sdpa=False`` is "explicit"; otherwise ``sdpa_rel_pos``
    "folded" is "sdpa_folded" and "mask" (or unset) "sdpa_mask". They win over ``attn_impl``.
    """
    if use_sdpa is not None or sdpa_rel_pos is not None:
        warnings.warn(
            "ViT attention: use_sdpa / sdpa_rel_pos are deprecated and go in the next release; "
            "use attn_impl='explicit', 'sdpa_mask' or 'sdpa_folded'",
            FutureWarning,
            stacklevel=3,
        )
        if sdpa_rel_pos not in (None, "mask", "folded"):
            raise ValueError(f'sdpa_rel_pos={sdpa_rel_pos!r}: expected "folded" or "mask"')
        if use_sdpa is False:
            attn_impl = "explicit"
        else:
            attn_impl = "sdpa_folded" if sdpa_rel_pos == "folded" else "sdpa_mask"
    if attn_impl == "auto":
        return "sdpa_mask" if rpe is not None else "auto"
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(
            f"attn_impl={attn_impl!r}: expected auto or one of {', '.join(ATTN_IMPLS)}"
        )
    return attn_impl


def _check_rpe_impl(rpe, attn_impl):
    if rpe is not None and attn_impl in ("sdpa_folded", "blocked"):
        how = (
            "folding needs per-token features"
            if attn_impl == "sdpa_folded"
            else "blocking adds only the decomposed rel-pos terms"
        )
        raise ValueError(
            f"iRPE {rpe} cannot be used with attn_impl='{attn_impl}': {how}, "
            "while iRPE terms depend on each (query, key) bucket; "
            "use attn_impl='sdpa_mask' or 'explicit'"
        )


class Mlp(nn.Module):
    """Two-layer MLP of a transformer block (keys ``fc1``/``fc2`` as timm's ``Mlp``)."""

    def __init__(self, in_features, hidden_features, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ResBottleneckBlock(CNNBlockBase):
    """Residual bottleneck conv block interleaved with ViT blocks (channels-first).

    1x1 conv C->bottleneck + norm + act, 3x3 conv + norm + act, 1x1 conv ->C + norm (zero-init),
    added to the input. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self, in_channels, out_channels, bottleneck_channels, norm="LN", act_layer=nn.GELU
    ):
        super().__init__(in_channels, out_channels, 1)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, bias=False)
        self.norm1 = get_norm(norm, bottleneck_channels)
        self.act1 = act_layer()

        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, padding=1, bias=False)
        self.norm2 = get_norm(norm, bottleneck_channels)
        self.act2 = act_layer()

        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = get_norm(norm, out_channels)

        for layer in [self.conv1, self.conv2, self.conv3]:
            weight_init.c2_msra_fill(layer)
        for layer in [self.norm1, self.norm2]:
            layer.weight.data.fill_(1.0)
            layer.bias.data.zero_()
        # zero-init the last norm: the block starts as identity
        self.norm3.weight.data.zero_()
        self.norm3.bias.data.zero_()

    def forward(self, x):
        out = x
        for layer in self.children():
            out = layer(out)
        return x + out


class Block(nn.Module):
    """Pre-norm transformer block with window/global attention and an optional conv block.

    Args:
        dim, num_heads, mlp_ratio, qkv_bias: as in :class:`ViT`.
        drop_path (float): stochastic depth rate of this block.
        norm_layer, act_layer: token norm and MLP activation.
        use_rel_pos, rel_pos_zero_init: see :class:`Attention`.
        window_size (int): window side; 0 means global attention.
        use_residual_block (bool): append a :class:`ResBottleneckBlock` after the MLP.
        input_size (tuple[int, int]): token grid (for the rel-pos tables of global blocks).
        attn_impl (str): see :class:`Attention`.
        rpe (str, RPESpec or None): iRPE spec (see :class:`Attention`); its buckets are taken
            on each window's (window_size, window_size) grid (padded tokens included, unmasked
            as for the rel-pos bias) or, for global attention, on the input's (H, W).
    """

    def __init__(
        self,
        dim,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
        act_layer=nn.GELU,
        use_rel_pos=False,
        rel_pos_zero_init=True,
        window_size=0,
        use_residual_block=False,
        input_size=None,
        attn_impl="auto",
        rpe=None,
        use_sdpa=None,
        sdpa_rel_pos=None,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            attn_impl=resolve_attn_impl(attn_impl, use_sdpa, sdpa_rel_pos, parse_rpe_spec(rpe)),
            rpe=rpe,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)

        self.window_size = window_size
        self.use_residual_block = use_residual_block
        if use_residual_block:
            self.residual = ResBottleneckBlock(
                in_channels=dim,
                out_channels=dim,
                bottleneck_channels=dim // 2,
                norm="LN",
                act_layer=act_layer,
            )

    def forward(self, x):
        """x: (B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))

        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))

        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class ViT(Backbone):
    """Plain ViT backbone of ViTDet ("Exploring Plain Vision Transformer Backbones for Object
    Detection"): one feature map ``out_feature`` of stride ``patch_size``.

    Args:
        img_size (int): input size the global rel-pos tables are made for.
        patch_size (int): patch side (= output stride).
        in_chans (int): input channels.
        embed_dim (int): token channels C.
        depth (int): number of blocks.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP hidden / C.
        qkv_bias (bool): bias in qkv projections.
        drop_path_rate (float): stochastic depth, linearly increasing from 0 to this.
        norm_layer, act_layer: token norm and MLP activation.
        use_abs_pos (bool): absolute position embeddings (stored at ``pretrain_img_size``).
        use_rel_pos (bool): decomposed relative position bias.
        rel_pos_zero_init (bool): zero-init the rel-pos tables.
        window_size (int): window side of the window-attention blocks.
        window_block_indexes (list[int]): blocks with window attention (others: global).
        residual_block_indexes (list[int]): blocks followed by a conv bottleneck block.
        use_act_checkpoint (bool): recompute block activations in backward (training only).
        pretrain_img_size (int): image size of pre-training (pos_embed grid).
        pretrain_use_cls_token (bool): pos_embed has a cls-token slot.
        out_feature (str): name of the output feature.
        attn_impl (str): "auto", "sdpa_mask", "sdpa_folded", "blocked" or "explicit" (see
            :class:`Attention`).
        rpe (str, RPESpec or None): iRPE spec such as "rpe-2.0-product-ctx-1-k", or None; each
            block gets its own zero-initialised tables (``blocks.{i}.attn.rpe_{q,k,v}``; see
            :class:`Attention` and :class:`Block`).
    """

    def __init__(
        self,
        img_size=1024,
        patch_size=16,
        in_chans=3,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.0,
        norm_layer=nn.LayerNorm,
        act_layer=nn.GELU,
        use_abs_pos=True,
        use_rel_pos=False,
        rel_pos_zero_init=True,
        window_size=0,
        window_block_indexes=(),
        residual_block_indexes=(),
        use_act_checkpoint=False,
        pretrain_img_size=224,
        pretrain_use_cls_token=True,
        out_feature="last_feat",
        attn_impl="auto",
        rpe=None,
        use_sdpa=None,
        sdpa_rel_pos=None,
    ):
        super().__init__()
        attn_impl = resolve_attn_impl(attn_impl, use_sdpa, sdpa_rel_pos, parse_rpe_spec(rpe))
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint

        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )

        if use_abs_pos:
            num_patches = (pretrain_img_size // patch_size) * (pretrain_img_size // patch_size)
            num_positions = (num_patches + 1) if pretrain_use_cls_token else num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # stochastic depth
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=window_size if i in window_block_indexes else 0,
                use_residual_block=i in residual_block_indexes,
                input_size=(img_size // patch_size, img_size // patch_size),
                attn_impl=attn_impl,
                rpe=rpe,
            )
            for i in range(depth)
        )

        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}
        self._out_features = [out_feature]

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x):
        """x: (B, in_chans, H, W) -> {out_feature: (B, embed_dim, H / patch, W / patch)}."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(
                self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2])
            )
        checkpointing = self.use_act_checkpoint and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False) if checkpointing else blk(x)
        return {self._out_features[0]: x.permute(0, 3, 1, 2)}


def set_vit_attention_impl(model, attn_impl, sdpa_rel_pos=None):
    """Switch every ViT :class:`Attention` in ``model`` to ``attn_impl`` (one of
    :data:`ATTN_IMPLS` or "auto"; the previous release's ``(use_sdpa: bool, sdpa_rel_pos)`` is accepted
    with a deprecation warning).

    Raises ValueError, changing nothing, if an attention with iRPE would become "sdpa_folded".
    """
    if isinstance(attn_impl, bool):
        attn_impl = resolve_attn_impl(use_sdpa=attn_impl, sdpa_rel_pos=sdpa_rel_pos or "mask")
    elif sdpa_rel_pos is not None:
        attn_impl = resolve_attn_impl(attn_impl, sdpa_rel_pos=sdpa_rel_pos)
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    # "auto" resolves per attention (with or without iRPE)
    impls = [resolve_attn_impl(attn_impl, rpe=m.rpe) for m in attns]
    for m, impl in zip(attns, impls):
        _check_rpe_impl(m.rpe, impl)
    for m, impl in zip(attns, impls):
        m.attn_impl = impl
    return model


def get_vit_lr_decay_rate(name, lr_decay_rate=1.0, num_layers=12):
    """Layer-wise lr decay factor of a parameter (BEiT/MAE recipe, as in upstream ViTDet).

    Args:
        name (str): full parameter name, e.g. ``backbone.net.blocks.3.attn.qkv.weight``.
        lr_decay_rate (float): decay per layer.
        num_layers (int): number of ViT blocks.
    Returns:
        float: ``lr_decay_rate ** (num_layers + 1 - layer_id)`` where patch/pos embeddings are
        layer 0, block i is layer i + 1, and everything else (pyramid, heads) num_layers + 1.
    """
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(name[name.find(".blocks.") :].split(".")[2]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)
