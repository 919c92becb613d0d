"""DETR's set criterion: classification, L1 and GIoU losses on Hungarian-matched pairs, also on
every intermediate decoder output (auxiliary losses, each re-matched)."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from detectron2.utils import comm

from .box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou

__all__ = ["SetCriterion"]


class SetCriterion(nn.Module):
    """The losses of DETR, unweighted (the model applies the weights).

    Per decoder output (the last one, then each intermediate one with the suffix ``_{i}``):

    * ``loss_ce``: cross-entropy over K + 1 classes; unmatched queries are "no object" (class K),
      whose weight is ``eos_coef`` (PyTorch's weighted mean divides by the summed weights);
    * ``loss_bbox``: L1 of the matched normalized cxcywh boxes, summed / ``num_boxes``;
    * ``loss_giou``: sum of (1 - GIoU) of the matched boxes / ``num_boxes``;

    with ``num_boxes`` the mean number of target boxes over the processes (at least 1).
    ``class_error`` and ``cardinality_error`` of the last output are returned separately, as
    statistics.

    Args:
        num_classes (int): K, without "no object".
        matcher (nn.Module): e.g. :class:`HungarianMatcher`.
        eos_coef (float): class weight of "no object" (DETR: 0.1).
    """

    def __init__(self, num_classes, matcher, eos_coef=0.1):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, pred_logits, pred_boxes, targets):
        """
        Args:
            pred_logits (Tensor): (num_layers, B, Q, K + 1), the last layer last.
            pred_boxes (Tensor): (num_layers, B, Q, 4) normalized cxcywh.
            targets (list[dict]): per image ``labels`` (T_i,) int64, ``boxes`` (T_i, 4)
                normalized cxcywh, on the model's device.
        Returns:
            losses (dict[str, Tensor]): ``loss_ce``, ``loss_bbox``, ``loss_giou`` and, for each
                intermediate layer i, ``loss_ce_{i}``, ``loss_bbox_{i}``, ``loss_giou_{i}``.
            stats (dict[str, float]): ``class_error`` (%, 100 on a batch without boxes, as
                official DETR), ``cardinality_error`` of the last layer.
        """
        num_boxes = self._num_boxes(targets, pred_logits.device)
        losses, stats = {}, {}
        num_layers = pred_logits.shape[0]
        for layer in range(num_layers):
            logits, boxes = pred_logits[layer], pred_boxes[layer]
            indices = self.matcher(logits, boxes, targets)
            suffix = "" if layer == num_layers - 1 else f"_{layer}"
            for name, value in self._losses(logits, boxes, targets, indices, num_boxes).items():
                losses[name + suffix] = value
        stats = self._stats(pred_logits[-1], pred_boxes[-1], targets, indices)
        return losses, stats

    @staticmethod
    def _num_boxes(targets, device):
        num_boxes = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = comm.get_world_size()
        if world_size > 1:
            dist.all_reduce(num_boxes)
        return torch.clamp(num_boxes / world_size, min=1).item()

    @staticmethod
    def _matched(indices):
        """(batch index, query index) of every matched prediction."""
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch, torch.cat([src for src, _ in indices])

    def _losses(self, logits, boxes, targets, indices, num_boxes):
        batch_idx, query_idx = self._matched(indices)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices)]
        )
        loss_ce = F.cross_entropy(logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        src_boxes = boxes[batch_idx, query_idx].float()
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
        giou = paired_generalized_box_iou(
            box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)
        )
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @torch.no_grad()
    def _stats(self, logits, boxes, targets, indices):
        batch_idx, query_idx = self._matched(indices)
        labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        matched = logits[batch_idx, query_idx]
        # a batch without boxes has an accuracy of 0, so a class error of 100: as official DETR
        # (its ``accuracy`` returns 0 for empty targets), so that logged curves compare
        accuracy = (
            (matched.argmax(-1) == labels).float().mean().item() * 100 if len(labels) else 0.0
        )
        num_pred = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        num_tgt = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device)
        return {
            "class_error": 100.0 - accuracy,
            "cardinality_error": F.l1_loss(num_pred, num_tgt.float()).item(),
        }

    def extra_repr(self):
        return f"num_classes={self.num_classes}, eos_coef={self.eos_coef}"
