"""The Feature Pyramid Transformer neck (FPT, Zhang et al., ECCV 2020, Sec. 3.5 and Fig. 2)."""

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling.backbone import Backbone
from torch import nn
from torchvision.ops import drop_block2d

from fpt.layers.mos_attention import ATTENTION_IMPLS, SIMILARITIES, check_choice

from .grounding_transformer import GroundingTransformer
from .rendering_transformer import RenderingTransformer
from .self_transformer import SelfTransformer

__all__ = ["FPT"]


class FPT(Backbone):
    """
    Transforms every level of a feature pyramid with the levels around it. Output level l is

        Conv3x3(concat[X_l, ST(X_l), GT(X_l <- X_m) for every coarser m,
                                     RT(X_l <- X_m) for every finer m])

    (the fusion conv's kernel is ``fusion_kernel_size``, 3 as in the paper)

    with one Self-Transformer per level and one Grounding / Rendering Transformer per level
    pair (4 levels: 4 ST, 6 GT, 6 RT, 5 x 256 channels into each fusion conv); ``top_block``
    (e.g. detectron2's ``LastLevelMaxPool``: P6 = max-pool of P5, kernel 1, stride 2) extends
    the outputs as in detectron2's ``FPN``.

    Output names are the pyramid's (``p2``..``p5``) plus the top block's (``p6``), strides
    4..64, ``size_divisibility`` 32 on a ResNet.
    """

    def __init__(
        self,
        pyramid,
        out_channels=256,
        norm="",
        top_block=None,
        self_transformer=True,
        grounding_transformer=True,
        rendering_transformer=True,
        self_parts=2,
        grounding_parts=4,
        self_similarity="dot",
        grounding_similarity="euclidean",
        grounding_mode="global",
        grounding_window=3,
        kv_pool=1,
        inner_channels=None,
        attention="sdpa",
        chunk_size=None,
        dropblock_prob=0.0,
        dropblock_size=3,
        fusion_kernel_size=3,
    ):
        """
        Args:
            pyramid (Backbone): the input pyramid, levels of equal channels from high to low
                resolution: :class:`BottomUpPyramid` (the paper's BFP) or detectron2's ``FPN``
                with ``top_block=None`` (FPT on top of FPN).
            out_channels (int): channels of every output level.
            norm (str): detectron2 norm name ("", "BN", "SyncBN", "GN") after the fusion convs
                and the Rendering Transformers' 3x3 convs.
            top_block (nn.Module or None): extra levels from an output level, as in ``FPN``.
            self_transformer, grounding_transformer, rendering_transformer (bool): use ST / GT /
                RT (all off: the BFP baseline with a 3x3 conv per level).
            self_parts, grounding_parts (int): MoS parts N of ST (paper: 2) and GT (paper: 4).
            self_similarity, grounding_similarity (str): "dot" or "euclidean"
                (paper: dot for ST, euclidean for GT).
            grounding_mode (str or list[str]): "global" or "local" (LGT), one for all levels or
                one per level (the finer, query level).
            grounding_window (int): window side of local GT.
            kv_pool (int or list[int]): key/value average-pooling factor, one for all levels or
                one per level (the level the keys come from); used by ST and global GT.
            inner_channels (int or None): query/key width of ST and GT (default: the level's).
            attention (str): "sdpa", "chunked" or "naive", see :func:`fpt.layers.mos_attention`.
            chunk_size (int or None): queries per attention chunk.
            dropblock_prob (float): DropBlock (``torchvision.ops.drop_block2d``) drop
                probability on every output level during training (0: off).
            dropblock_size (int): DropBlock block size (odd; clipped to small maps).
            fusion_kernel_size (int): kernel of the conv that fuses each level's concatenation
                (paper: 3; 1 cuts the neck's largest cost, the 5 x 256 -> 256 conv at P2, ~9x).
        """
        super().__init__()
        shapes = pyramid.output_shape()
        self.in_features = tuple(pyramid._out_features)
        num_levels = len(self.in_features)
        channels = {shapes[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise ValueError(f"FPT needs pyramid levels of equal channels, got {shapes}")
        (in_channels,) = channels
        strides = [shapes[f].stride for f in self.in_features]
        grounding_mode = _per_level("grounding_mode", grounding_mode, num_levels, str)
        kv_pool = _per_level("kv_pool", kv_pool, num_levels, int)
        check_choice("attention", attention, ATTENTION_IMPLS)
        check_choice("self_similarity", self_similarity, SIMILARITIES)
        check_choice("grounding_similarity", grounding_similarity, SIMILARITIES)
        for mode in grounding_mode:
            check_choice("grounding_mode", mode, ("global", "local"))
        if fusion_kernel_size < 1 or fusion_kernel_size % 2 == 0:
            raise ValueError(
                f"fusion_kernel_size={fusion_kernel_size} must be a positive odd integer"
            )
        if not 0.0 <= dropblock_prob < 1.0:
            raise ValueError(f"dropblock_prob={dropblock_prob} must be in [0, 1)")
        attention_args = dict(
            in_channels=in_channels,
            inner_channels=inner_channels,
            impl=attention,
            chunk_size=chunk_size,
        )

        self.pyramid = pyramid
        self.self_transformers = nn.ModuleDict()
        self.grounding_transformers = nn.ModuleDict()
        self.rendering_transformers = nn.ModuleDict()
        self.fusion_convs = nn.ModuleDict()
        for i, name in enumerate(self.in_features):
            if self_transformer:
                self.self_transformers[name] = SelfTransformer(
                    num_parts=self_parts,
                    similarity=self_similarity,
                    kv_pool=kv_pool[i],
                    **attention_args,
                )
            for j in range(i + 1, num_levels) if grounding_transformer else ():
                local = grounding_mode[i] == "local"
                self.grounding_transformers[_pair(self.in_features[j], name)] = (
                    GroundingTransformer(
                        num_parts=grounding_parts,
                        similarity=grounding_similarity,
                        mode=grounding_mode[i],
                        window=grounding_window,
                        ratio=strides[j] // strides[i],
                        kv_pool=1 if local else kv_pool[j],
                        **attention_args,
                    )
                )
            for j in range(i) if rendering_transformer else ():
                self.rendering_transformers[_pair(self.in_features[j], name)] = (
                    RenderingTransformer(in_channels, strides[i] // strides[j], norm)
                )
            num_inputs = 1 + bool(self_transformer)
            num_inputs += (num_levels - 1 - i) * bool(grounding_transformer)
            num_inputs += i * bool(rendering_transformer)
            conv = Conv2d(
                num_inputs * in_channels,
                out_channels,
                fusion_kernel_size,
                padding=fusion_kernel_size // 2,
                bias=not norm,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(conv)
            self.fusion_convs[name] = conv
        if dropblock_size < 1 or dropblock_size % 2 == 0:
            raise ValueError(f"dropblock_size={dropblock_size} must be a positive odd integer")
        self.dropblock_prob = dropblock_prob
        self.dropblock_size = dropblock_size
        self.top_block = top_block

        self._out_features = list(self.in_features)
        self._out_feature_strides = dict(zip(self.in_features, strides))
        if top_block is not None:
            if top_block.in_feature not in self.in_features:
                raise ValueError(
                    f"FPT top_block.in_feature={top_block.in_feature!r} is not an FPT level "
                    f"{list(self.in_features)}"
                )
            last = int(self.in_features[-1][1:])
            for k in range(1, top_block.num_levels + 1):
                self._out_features.append(f"p{last + k}")
                self._out_feature_strides[f"p{last + k}"] = strides[-1] * 2**k
        self._out_feature_channels = {f: out_channels for f in self._out_features}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self):
        return self._size_divisibility

    def forward(self, x):
        """
        Args:
            x: (B, 3, H, W) images, H and W divisible by ``size_divisibility``.
        Returns:
            dict[str -> Tensor]: ``p2``..``p6``, each (B, out_channels, H / stride, W / stride).
        """
        features = self.pyramid(x)
        levels = [features[f] for f in self.in_features]
        results = {}
        for i, name in enumerate(self.in_features):
            parts = [levels[i]]
            if name in self.self_transformers:
                parts.append(self.self_transformers[name](levels[i]))
            for j in range(i + 1, len(levels)):
                key = _pair(self.in_features[j], name)
                if key in self.grounding_transformers:
                    parts.append(self.grounding_transformers[key](levels[i], levels[j]))
            for j in range(i):
                key = _pair(self.in_features[j], name)
                if key in self.rendering_transformers:
                    parts.append(self.rendering_transformers[key](levels[i], levels[j]))
            out = self.fusion_convs[name](torch.cat(parts, dim=1))
            results[name] = self._dropblock(out)
        if self.top_block is not None:
            extra = self.top_block(results[self.top_block.in_feature])
            results.update(zip(self._out_features[len(self.in_features) :], extra))
        return results

    def _dropblock(self, x):
        """torchvision's DropBlock, with the block clipped to the largest odd size that fits."""
        if not (self.training and self.dropblock_prob):
            return x
        size = min(self.dropblock_size, *x.shape[-2:])
        return drop_block2d(x, self.dropblock_prob, size - 1 + size % 2, training=True)


def _pair(source, target):
    """Module name of the transformer that carries level ``source`` into level ``target``."""
    return f"{source}_to_{target}"


def _per_level(name, value, num_levels, kind):
    """``value`` for every level: one value for all, or a list of one per level."""
    if isinstance(value, kind):
        return [value] * num_levels
    value = list(value)
    if len(value) != num_levels or not all(isinstance(v, kind) for v in value):
        raise ValueError(
            f"{name}={value!r}: expected one {kind.__name__} or a list of {num_levels} "
            f"(one per pyramid level)"
        )
    return value
