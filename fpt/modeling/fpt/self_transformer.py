"""Self-Transformer (ST): non-local interaction within one pyramid level (FPT, Sec. 3.2)."""

from torch import nn

from fpt.layers.mos_attention import MoSAttention

__all__ = ["SelfTransformer"]


class SelfTransformer(nn.Module):
    """
    ``X^_i = sum_j w_ij v_j`` with ``w_ij = sum_n pi_n softmax_j(<q_i,n, k_j,n>)``: q, k, v are
    1x1-conv projections of the same map X, q and k are split into N = 2 parts, and
    ``pi = softmax(W^T kbar)`` is one N-way distribution per image (Mixture of Softmaxes).
    """

    def __init__(
        self,
        in_channels=256,
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
            in_channels (int): channels C of the level (and of the output).
            inner_channels (int or None): query/key width, default C.
            num_parts (int): N, softmaxes in the mixture (paper: 2).
            similarity (str): "dot" (paper) or "euclidean".
            scale (float or None): temperature, default ``1 / sqrt(inner_channels / N)``.
            kv_pool (int): average-pool keys/values by this factor (1: the paper's global ST).
            impl, chunk_size: attention kernel, see :func:`fpt.layers.mos_attention`.
        """
        super().__init__()
        self.attention = MoSAttention(
            in_channels, inner_channels, num_parts, similarity, scale, kv_pool, impl, chunk_size
        )

    def forward(self, x):
        """x: (B, C, H, W) -> (B, C, H, W)."""
        return self.attention(x, x)
