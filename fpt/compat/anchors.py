"""Anchor grid offsets without ``torch.meshgrid``'s missing-``indexing`` warning.

What: replace ``detectron2.modeling.anchor_generator._create_grid_offsets`` with an equivalent
that builds the row-major (y, x) grid with ``repeat``/``repeat_interleave``.
Why: detectron2 0.6 calls ``torch.meshgrid(shifts_y, shifts_x)`` without ``indexing=``
(modeling/anchor_generator.py:48), a UserWarning on every forward pass of every RPN/RetinaNet.
When it can go: when detectron2 is >= 0.7 (it passes ``indexing="ij"``).
"""
import torch


def create_grid_offsets(size, stride, offset, device):
    """Centres of a ``size`` = (H, W) grid of cells ``stride`` apart, starting at
    ``offset * stride``; returns (shift_x, shift_y), each of shape (H*W,), row-major."""
    grid_height, grid_width = size
    shifts_x = torch.arange(
        offset * stride, grid_width * stride, step=stride, dtype=torch.float32, device=device
    )
    shifts_y = torch.arange(
        offset * stride, grid_height * stride, step=stride, dtype=torch.float32, device=device
    )
    return shifts_x.repeat(len(shifts_y)), shifts_y.repeat_interleave(len(shifts_x))


def apply():
    import detectron2.modeling.anchor_generator as anchor_generator

    anchor_generator._create_grid_offsets = create_grid_offsets
