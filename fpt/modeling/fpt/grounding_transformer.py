"""Grounding Transformer (GT): a coarser level grounds a finer one, top-down (FPT, Sec. 3.3)."""

import torch
import torch.nn.functional as F
from torch import nn

from fpt.layers.mos_attention import MoSAttention, check_choice

__all__ = ["GroundingTransformer"]


class GroundingTransformer(nn.Module):
    """
    Queries from the finer map X^f, keys and values from the coarser map X^c; similarity
    ``s^n_ij = -||q_i,n - k_j,n||^2`` and a Mixture of Softmaxes with N = 4; the output has the
    finer map's size.

    ``mode="global"``: every fine query attends to every coarse position.
    ``mode="local"`` (locality-constrained GT, LGT, for pixel-level tasks): fine position (i, j)
    attends only to the ``window x window`` square of the coarse map centred at its
    corresponding coarse position ``(i // ratio, j // ratio)``; positions outside the coarse map
    are zero keys and values. Cost O(H_f W_f window^2): fine queries are grouped by coarse cell
    (``ratio^2`` each) and attend to that cell's unfolded window, so nothing of size
    ``fine x coarse`` is ever built.
    """

    def __init__(
        self,
        in_channels=256,
        inner_channels=None,
        num_parts=4,
        similarity="euclidean",
        scale=None,
        mode="global",
        window=3,
        ratio=2,
        kv_pool=1,
        impl="sdpa",
        chunk_size=None,
    ):
        """
        Args:
            in_channels (int): channels C of both levels (and of the output).
            inner_channels (int or None): query/key width, default C.
            num_parts (int): N, softmaxes in the mixture (paper: 4).
            similarity (str): "euclidean" (paper) or "dot".
            scale (float or None): temperature, default ``1 / sqrt(inner_channels / N)``.
            mode (str): "global" or "local".
            window (int): odd side of the coarse window in "local" mode.
            ratio (int): stride of the coarse level / stride of the fine level ("local" mode).
            kv_pool (int): average-pool the coarse map by this factor for keys/values ("global"
                mode only; 1: none).
            impl, chunk_size: attention kernel, see :func:`fpt.layers.mos_attention`.
        """
        super().__init__()
        check_choice("grounding mode", mode, ("global", "local"))
        if mode == "local":
            if window < 1 or window % 2 == 0:
                raise ValueError(f"grounding window={window} must be a positive odd integer")
            if ratio < 1:
                raise ValueError(f"grounding ratio={ratio} must be an integer >= 1")
            if kv_pool != 1:
                raise ValueError(f"kv_pool={kv_pool}: key/value pooling needs mode='global'")
        self.attention = MoSAttention(
            in_channels, inner_channels, num_parts, similarity, scale, kv_pool, impl, chunk_size
        )
        self.mode = mode
        self.window = window
        self.ratio = ratio

    def forward(self, fine, coarse):
        """fine: (B, C, H, W), coarse: (B, C, h, w) -> (B, C, H, W)."""
        if self.mode == "global":
            return self.attention(fine, coarse)
        return self._local(fine, coarse)

    def _local(self, fine, coarse):
        q, k, v, pi = self.attention.project(fine, coarse)
        r, w = self.ratio, self.window
        height, width = fine.shape[-2:]
        h, wc = k.shape[-2:]
        if -(-height // r) != h or -(-width // r) != wc:
            raise ValueError(
                f"local grounding: fine map {height}x{width} and coarse map {h}x{wc} "
                f"do not differ by ratio={r}"
            )
        batch = fine.shape[0]
        # fine queries grouped by coarse cell: (B * h * wc, r * r, Ci)
        q = F.pad(q, (0, wc * r - width, 0, h * r - height))
        q = q.unflatten(2, (h, r)).unflatten(4, (wc, r)).permute(0, 2, 4, 3, 5, 1)
        q = q.reshape(batch * h * wc, r * r, -1)
        # each cell's window of keys/values, zero outside the map: (B * h * wc, w * w, C)
        k, v = (_windows(t, w) for t in (k, v))
        # w * w keys per query: explicit softmaxes (the fused kernels would pad q/k to C columns)
        impl = "naive" if self.attention.impl == "naive" else "chunked"
        out = self.attention.attend(q, k, v, pi.repeat_interleave(h * wc, dim=0), impl)
        out = out.reshape(batch, h, wc, r, r, -1).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(batch, -1, h * r, wc * r)[:, :, :height, :width]


def _windows(t, w):
    """(B, C, h, wc) -> (B * h * wc, w * w, C): the w x w window around every position, zero
    outside the map, gathered from a channels-last copy (whole C-vectors at a time)."""
    batch, channels, h, wc = t.shape
    t = F.pad(t, [w // 2] * 4).permute(0, 2, 3, 1).contiguous()  # (B, h + w - 1, wc + w - 1, C)
    t = torch.stack([t[:, a : a + h, b : b + wc] for a in range(w) for b in range(w)], dim=3)
    return t.reshape(batch * h * wc, w * w, channels)
