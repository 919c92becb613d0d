"""Box conversions and the pairwise generalized IoU of DETR (boxes as (N, 4) tensors).

``generalized_box_iou`` is *pairwise* ((N, M) from N and M boxes); fvcore's
``generalized_box_iou_loss`` is elementwise.
"""

import torch

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_iou",
    "generalized_box_iou",
    "paired_generalized_box_iou",
]


def box_cxcywh_to_xyxy(x):
    """(..., 4) centre-size boxes (cx, cy, w, h) -> corner boxes (x1, y1, x2, y2)."""
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(x):
    """(..., 4) corner boxes (x1, y1, x2, y2) -> centre-size boxes (cx, cy, w, h)."""
    x0, y0, x1, y1 = x.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def _area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_union(boxes1, boxes2):
    """IoU and union of boxes broadcast against each other: (..., 4), (..., 4) -> (...), (...)."""
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = _area(boxes1) + _area(boxes2) - inter
    return inter / union, union


def _giou(boxes1, boxes2):
    """Generalized IoU of boxes broadcast against each other (checked first)."""
    _check_boxes(boxes1, "predicted")
    _check_boxes(boxes2, "target")
    iou, union = _iou_union(boxes1, boxes2)
    lt = torch.min(boxes1[..., :2], boxes2[..., :2])
    rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    area = (rb - lt).clamp(min=0).prod(dim=-1)
    return iou - (area - union) / area


def _check_boxes(boxes, name):
    if not torch.isfinite(boxes).all():
        raise FloatingPointError(f"non-finite or degenerate {name} boxes: values are not finite")
    if not (boxes[..., 2:] >= boxes[..., :2]).all():
        raise FloatingPointError(f"non-finite or degenerate {name} boxes: x2 < x1 or y2 < y1")


def box_iou(boxes1, boxes2):
    """Pairwise IoU and union of xyxy boxes: (N, 4), (M, 4) -> (N, M), (N, M)."""
    return _iou_union(boxes1[:, None], boxes2[None])


def generalized_box_iou(boxes1, boxes2):
    """Pairwise generalized IoU (Rezatofighi et al., 2019) of xyxy boxes.

    Args:
        boxes1 (Tensor): (N, 4), boxes2 (Tensor): (M, 4), with x2 >= x1 and y2 >= y1.
    Returns:
        Tensor: (N, M), in [-1, 1].
    Raises:
        FloatingPointError: one line, when a box is not finite or has x2 < x1 / y2 < y1 (a
            degenerate prediction would otherwise give NaN losses further on).
    """
    return _giou(boxes1[:, None], boxes2[None])


def paired_generalized_box_iou(boxes1, boxes2):
    """Generalized IoU of matched pairs: (N, 4), (N, 4) -> (N,), the diagonal of
    :func:`generalized_box_iou` without computing the rest."""
    return _giou(boxes1, boxes2)
