"""Anchor grid offsets without ``torch.meshgrid``'s missing-``indexing`` warning.

What: replace ``detectron2.modeling.anchor_generator._create_grid_offsets`` with a function of
the *same signature* as the installed one, calling ``torch.meshgrid(..., indexing="ij")``:
- detectron2 0.6: ``(size, stride, offset, device: torch.device)``;
- detectron2 main (2022 on): ``(size, stride, offset, target_device_tensor: Tensor)``, the grid
  placed with ``detectron2.layers.move_device_like`` (so a traced model keeps following its
  input's device).
Which one is chosen by the name of the installed function's fourth parameter (a feature, not a
version); a function with neither signature is left alone, with one logged line.
Both stay scriptable (``torch.jit.script`` of ``DefaultAnchorGenerator``,
``RotatedAnchorGenerator``, RPN, RetinaNet) and trace-safe: the grid sizes flow through
``arange``/``meshgrid``/``reshape`` as traced values (no Python ``len``), so a model traced at
one image size runs at another.
Why: detectron2 0.6 and main (at 02b5c4e, 2026-06) both call ``torch.meshgrid(shifts_y,
shifts_x)`` without ``indexing=`` (modeling/anchor_generator.py), a UserWarning on every forward
pass of every RPN/RetinaNet.
When it can go: when detectron2 passes ``indexing="ij"`` itself.
"""

import inspect
import logging
from typing import List, Tuple

import torch


def _flat_grid(shifts_x: torch.Tensor, shifts_y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    shift_y, shift_x = torch.meshgrid([shifts_y, shifts_x], indexing="ij")
    return shift_x.reshape(-1), shift_y.reshape(-1)


def create_grid_offsets(size: List[int], stride: int, offset: float, device: torch.device):
    """Centres of a ``size`` = (H, W) grid of cells ``stride`` apart, starting at
    ``offset * stride``; returns (shift_x, shift_y), each of shape (H*W,), row-major.
    detectron2 0.6's signature (the grid made on ``device``)."""
    grid_height, grid_width = size
    shifts_x = torch.arange(
        offset * stride, grid_width * stride, step=stride, dtype=torch.float32, device=device
    )
    shifts_y = torch.arange(
        offset * stride, grid_height * stride, step=stride, dtype=torch.float32, device=device
    )
    return _flat_grid(shifts_x, shifts_y)


def _grid_offsets_like():
    from detectron2.layers import move_device_like

    def create_grid_offsets_like(
        size: List[int], stride: int, offset: float, target_device_tensor: torch.Tensor
    ):
        """:func:`create_grid_offsets` with detectron2 main's signature: the grid is moved to
        ``target_device_tensor``'s device with ``move_device_like``."""
        grid_height, grid_width = size
        shifts_x = torch.arange(
            offset * stride, grid_width * stride, step=stride, dtype=torch.float32
        )
        shifts_y = torch.arange(
            offset * stride, grid_height * stride, step=stride, dtype=torch.float32
        )
        return _flat_grid(
            move_device_like(shifts_x, target_device_tensor),
            move_device_like(shifts_y, target_device_tensor),
        )

    return create_grid_offsets_like


def apply():
    import detectron2.modeling.anchor_generator as anchor_generator

    installed = anchor_generator._create_grid_offsets
    params = list(inspect.signature(installed).parameters)
    if params[3:4] == ["device"]:
        anchor_generator._create_grid_offsets = create_grid_offsets
    elif params[3:4] == ["target_device_tensor"]:
        anchor_generator._create_grid_offsets = _grid_offsets_like()
    else:
        logging.getLogger("fpt").info(
            "fpt.compat.anchors: detectron2's _create_grid_offsets%s is not one fpt knows; "
            "left as it is",
            inspect.signature(installed),
        )
