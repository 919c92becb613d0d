"""Box predictor with sigmoid cross-entropy and the federated loss (LVIS), on detectron2 v0.6 and
main alike.

detectron2 main's ``FastRCNNOutputLayers`` has ``use_sigmoid_ce`` / ``use_fed_loss`` (upstream's
ViTDet LVIS configs set both); detectron2 0.6's has neither. :class:`FedLossFastRCNNOutputLayers`
adds them (our code, the same arguments and numbers as main's), so that the LVIS configs build
and train the same model on both: it asks its parent for the softmax head only.

Federated loss (Zhou et al., "Probabilistic two-stage detection", 2021): the sigmoid
cross-entropy of an image batch counts only the classes present in it plus classes drawn at
random (without replacement, weight ``image_count ** power``) up to ``fed_loss_num_classes``;
LVIS's annotations are not exhaustive, so other classes are not penalised as negatives.
"""

import torch
import torch.nn.functional as F

from detectron2.layers import cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

from ..data.lvis import fed_loss_class_weights

__all__ = ["FedLossFastRCNNOutputLayers", "fed_loss_classes", "sigmoid_ce_loss"]


def fed_loss_classes(gt_classes, num_fed_loss_classes, num_classes, weight):
    """The classes the federated loss counts: those in ``gt_classes`` (background ``num_classes``
    among them is dropped later), topped up to ``num_fed_loss_classes`` with classes drawn without
    replacement in proportion to ``weight`` (K floats)."""
    present = torch.unique(gt_classes)
    if len(present) >= num_fed_loss_classes:
        return present
    prob = present.new_zeros(num_classes + 1).float()
    prob[:num_classes] = weight.float()
    prob[present] = 0
    drawn = torch.multinomial(prob, num_fed_loss_classes - len(present), replacement=False)
    return torch.cat([present, drawn])


def sigmoid_ce_loss(logits, gt_classes, classes=None):
    """Sigmoid cross-entropy of (N, K + 1) logits (the last column, background, is unused)
    against one-hot targets, summed over the K classes (only over ``classes`` when given) and
    averaged over the N boxes."""
    if logits.numel() == 0:
        return logits.new_zeros(())
    n, k = logits.shape[0], logits.shape[1] - 1
    target = F.one_hot(gt_classes, k + 1)[:, :k].to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits[:, :k], target, reduction="none")
    if classes is not None:
        mask = logits.new_zeros(k + 1)
        mask[classes] = 1
        loss = loss * mask[:k]
    return loss.sum() / n


class FedLossFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` (same arguments) plus, as in detectron2 main:

    Args:
        use_sigmoid_ce (bool): per-class sigmoid cross-entropy and sigmoid scores at test time,
            in place of the softmax.
        use_fed_loss (bool): the federated loss (needs ``use_sigmoid_ce``).
        fed_loss_datasets (str or list[str]): the registered training set(s) whose per-class
            image counts weight the drawn classes (:func:`fpt.data.lvis.fed_loss_class_weights`);
            read on the first training step, so that building the model for inference reads no
            dataset.
        fed_loss_freq_weight_power (float): the power of the image counts (upstream LVIS: 0.5).
        fed_loss_num_classes (int): classes counted per batch (upstream: 50).
    """

    def __init__(
        self,
        *args,
        use_sigmoid_ce=False,
        use_fed_loss=False,
        fed_loss_datasets=(),
        fed_loss_freq_weight_power=0.5,
        fed_loss_num_classes=50,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if use_fed_loss and not use_sigmoid_ce:
            raise ValueError("FedLossFastRCNNOutputLayers: use_fed_loss needs use_sigmoid_ce=True")
        if use_fed_loss and not fed_loss_datasets:
            raise ValueError("FedLossFastRCNNOutputLayers: use_fed_loss needs fed_loss_datasets")
        self.use_sigmoid_ce = use_sigmoid_ce
        self.use_fed_loss = use_fed_loss
        self.fed_loss_datasets = fed_loss_datasets
        self.fed_loss_freq_weight_power = fed_loss_freq_weight_power
        self.fed_loss_num_classes = fed_loss_num_classes
        self.fed_loss_cls_weights = None  # (K,) once read

    def _class_weights(self, device):
        if self.fed_loss_cls_weights is None:
            weights = fed_loss_class_weights(
                self.fed_loss_datasets, self.fed_loss_freq_weight_power
            )
            if len(weights) != self.num_classes:
                raise ValueError(
                    f"fed_loss_datasets {self.fed_loss_datasets} have {len(weights)} classes, "
                    f"the box predictor {self.num_classes}"
                )
            self.fed_loss_cls_weights = weights
        return self.fed_loss_cls_weights.to(device)

    def losses(self, predictions, proposals):
        """The parent's losses, with ``loss_cls`` the (federated) sigmoid cross-entropy when
        ``use_sigmoid_ce`` (the parent's softmax loss of the same rows is computed and dropped:
        its box loss and classification statistics stay the parent's own)."""
        losses = super().losses(predictions, proposals)
        if not self.use_sigmoid_ce:
            return losses
        scores = predictions[0]
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.long, device=scores.device)
        )
        classes = None
        if self.use_fed_loss:
            classes = fed_loss_classes(
                gt_classes,
                self.fed_loss_num_classes,
                self.num_classes,
                self._class_weights(scores.device),
            )
        weight = self.loss_weight.get("loss_cls", 1.0)
        losses["loss_cls"] = sigmoid_ce_loss(scores, gt_classes, classes) * weight
        return losses

    def predict_probs(self, predictions, proposals):
        if not self.use_sigmoid_ce:
            return super().predict_probs(predictions, proposals)
        scores = predictions[0]
        return scores.sigmoid().split([len(p) for p in proposals], dim=0)
