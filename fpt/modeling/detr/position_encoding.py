"""The sine position encoding of DETR (``PositionEmbeddingSine``), computed from the padding mask."""

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of each feature-map cell's (row, column) among the *valid* cells.

    Positions are the cumulative counts of valid cells down each column (y) and along each row
    (x), normalized to (0, 2 pi] by the image's valid extent when ``normalize``; each is encoded by
    ``num_pos_feats`` interleaved sin/cos features with wavelengths ``temperature ** (2 (i // 2) /
    num_pos_feats)``; the output is ``cat(pos_y, pos_x)``.

    Args:
        num_pos_feats (int): features per axis (half the model width: 128 for d_model 256).
        temperature (float): wavelength base.
        normalize (bool): normalize positions by the valid extent (DETR: True).
        scale (float): the normalized range (default 2 pi).
    """

    def __init__(self, num_pos_feats=128, temperature=10000, normalize=True, scale=None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, mask):
        """
        Args:
            mask (Tensor): (B, h, w) bool, True on padding.
        Returns:
            Tensor: (B, 2 num_pos_feats, h, w) float32.
        """
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self):
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale:.4f}"
        )
