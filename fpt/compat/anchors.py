"""Anchor grid offsets without ``torch.meshgrid``'s missing-``indexing`` warning.

What: replace ``detectron2.modeling.anchor_generator._create_grid_offsets`` with upstream's
function, type annotations included, calling ``torch.meshgrid(..., indexing="ij")``. It stays
scriptable (``torch.jit.script`` of ``DefaultAnchorGenerator``, ``RotatedAnchorGenerator``, RPN,
RetinaNet) and trace-safe: the grid sizes flow through ``arange``/``meshgrid``/``reshape`` as
traced values (no Python ``len``), so a model traced at one image size runs at another.
Why: detectron2 0.6 calls ``torch.meshgrid(shifts_y, shifts_x)`` without ``indexing=``
(modeling/anchor_generator.py:48), a UserWarning on every forward pass of every RPN/RetinaNet.
When it can go: when detectron2 passes ``indexing="ij"`` itself (newer than 0.6).
"""

from typing import List

import torch


def create_grid_offsets(size: List[int], stride: int, offset: float, device: torch.device):
    """Centres of a ``size`` = (H, W) grid of cells ``stride`` apart, starting at
    ``offset * stride``; returns (shift_x, shift_y), each of shape (H*W,), row-major."""
    grid_height, grid_width = size
    shifts_x = torch.arange(
        offset * stride, grid_width * stride, step=stride, dtype=torch.float32, device=device
    )
    shifts_y = torch.arange(
        offset * stride, grid_height * stride, step=stride, dtype=torch.float32, device=device
    )
    shift_y, shift_x = torch.meshgrid([shifts_y, shifts_x], indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def apply():
    import detectron2.modeling.anchor_generator as anchor_generator

    anchor_generator._create_grid_offsets = create_grid_offsets
