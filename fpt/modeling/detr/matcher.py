"""DETR's Hungarian matcher: a one-to-one assignment of predictions to targets per image."""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """Minimum-cost bipartite matching (``scipy.optimize.linear_sum_assignment``) with the cost

        C = cost_bbox * L1(box, target box) - cost_class * p(target class)
            - cost_giou * GIoU(box, target box)

    between every prediction and every target of an image (boxes as normalized cxcywh).

    Args:
        cost_class (float), cost_bbox (float), cost_giou (float): the cost weights (DETR: 1, 5, 2).
    """

    def __init__(self, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(self, pred_logits, pred_boxes, targets):
        """
        Args:
            pred_logits (Tensor): (B, Q, K + 1) class logits (the last class is "no object").
            pred_boxes (Tensor): (B, Q, 4) normalized cxcywh boxes.
            targets (list[dict]): per image, ``labels`` (T_i,) int64 and ``boxes`` (T_i, 4)
                normalized cxcywh.
        Returns:
            list[tuple[Tensor, Tensor]]: per image, int64 (pred_idx, tgt_idx), each of length
            min(Q, T_i), on the CPU.
        """
        B, Q = pred_logits.shape[:2]
        out_prob = pred_logits.flatten(0, 1).float().softmax(-1)  # (B Q, K + 1)
        out_bbox = pred_boxes.flatten(0, 1).float()  # (B Q, 4)
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).float()

        cost_class = -out_prob[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
        C = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        C = C.view(B, Q, -1).cpu()

        sizes = [len(t["boxes"]) for t in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(C.split(sizes, -1))]
        return [
            (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
            for i, j in indices
        ]

    def extra_repr(self):
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, "
            f"cost_giou={self.cost_giou}"
        )
