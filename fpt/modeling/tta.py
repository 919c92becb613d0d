"""Test-time augmentation (TTA): a detector run on several rescaled and mirrored views of each
image, its detections merged into one set in the original image's coordinates.

* :class:`RCNNWithTTA` (``GeneralizedRCNN``: FPN, ViTDet, FPT Mask/Faster R-CNN, cascades too):
  the box head runs on every view; the boxes, mapped back to the original image, are merged by
  per-class NMS at the box predictor's own threshold and count (what the model does within one
  view, done across views). The mask head then runs on every view's features with the *merged*
  boxes (mapped into that view; its output mirrored back on flipped views) and the mask
  probabilities are averaged over views before they are pasted, so each merged instance gets a
  mask that all views voted on. The features of each view are computed once and kept until its
  masks are done.
* :class:`DETRWithTTA`: DETR's set prediction has no duplicates within a view, so merging
  across views is a matching problem, not a suppression one: :func:`fuse_boxes` is weighted box
  fusion (Solovyev et al., 2021) restricted to **at most one box per view in a cluster**. NMS
  would keep one view's box and throw the others' localization away; fusion averages the boxes
  of the views that agree (weighted by score) and scores an object by its mean score over all
  views (0 in the views that missed it), so an object found in one view only is ranked down
  instead of kept at its full score. The one-box-per-view rule keeps two adjacent objects of one
  class that a view told apart from being fused into one, and makes a single view return exactly
  the model's own output.

Views (:class:`TTAViews`): each size times (no flip, horizontal flip). Sizes are absolute
shortest edges (``min_sizes`` with ``max_size``, as detectron2's ``TEST.AUG``) or ``scales`` of
the size the test loader gives (its test resize). A backbone that pads every image to a fixed
square (ViTDet's ``SimpleFeaturePyramid(square_pad=S)``) cannot take a larger image: sizes are
capped so that the longer side is at most ``S``, and views that become equal are run once. Other
size constraints (FPT's and FPN's size divisibility) are met by the model's own padding.

A view at the test loader's size (the identity) uses the loader's image as is; other views are
resized from the original image, which is the loader's image resized back when the test resize
changed its size (as detectron2's ``GeneralizedRCNNWithTTA`` does).
"""

import logging

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.ops import box_iou

from detectron2.data.transforms import ResizeShortestEdge, ResizeTransform
from detectron2.layers import batched_nms
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from .detr import DETR

__all__ = ["DETRWithTTA", "RCNNWithTTA", "TTAViews", "View", "fuse_boxes", "with_tta"]

logger = logging.getLogger(__name__)


class View:
    """One view of an image: the original ``(height, width)`` resized to ``size`` ``(h, w)``,
    then mirrored left-right if ``flip``. Maps boxes between the two frames."""

    def __init__(self, original_size, size, flip):
        self.original_size = tuple(original_size)
        self.size = tuple(size)
        self.flip = flip

    def __repr__(self):
        return f"View({self.size[0]}x{self.size[1]}{', flip' if self.flip else ''})"

    def _scale(self, boxes):
        (H, W), (h, w) = self.original_size, self.size
        return boxes.new_tensor([w / W, h / H, w / W, h / H])

    def to_original(self, boxes):
        """``(N, 4)`` XYXY boxes in this view -> in the original image."""
        if self.flip:
            boxes = _mirror(boxes, self.size[1])
        return boxes / self._scale(boxes)

    def from_original(self, boxes):
        """``(N, 4)`` XYXY boxes in the original image -> in this view."""
        boxes = boxes * self._scale(boxes)
        return _mirror(boxes, self.size[1]) if self.flip else boxes


def _mirror(boxes, width):
    """XYXY boxes mirrored left-right in an image ``width`` wide."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


class TTAViews:
    """
    The views of each image and their pixels.

    Args:
        min_sizes (list[int] or None): shortest edges (the longer edge at most ``max_size``), as
            detectron2's ``TEST.AUG.MIN_SIZES``; None: use ``scales``.
        max_size (int or None): cap of the longer edge for ``min_sizes`` (None: no cap).
        scales (list[float]): with ``min_sizes=None``, factors of the size of the image the
            model gets (after the test loader's resize); 1.0 is that image itself.
        flip (bool): add a left-right mirrored view of every size.
        max_side (int): the backbone's fixed square input (0: none); sizes are capped to it.
    """

    def __init__(self, min_sizes=None, max_size=None, scales=(1.0,), flip=True, max_side=0):
        if min_sizes is not None:
            if not min_sizes or not all(_positive(s, int) for s in min_sizes):
                raise ValueError(f"min_sizes must be positive integers, got {min_sizes}")
            if max_size is not None and not _positive(max_size, int):
                raise ValueError(f"max_size must be a positive integer or None, got {max_size}")
        elif not scales or not all(_positive(s, (int, float)) for s in scales):
            raise ValueError(f"scales must be positive numbers, got {scales}")
        self.min_sizes = list(min_sizes) if min_sizes is not None else None
        self.max_size = max_size
        self.scales = [float(s) for s in scales] if min_sizes is None else None
        self.flip = bool(flip)
        self.max_side = int(max_side or 0)

    def __repr__(self):
        sizes = (
            f"min_sizes={self.min_sizes}, max_size={self.max_size}"
            if self.min_sizes is not None
            else f"scales={self.scales}"
        )
        cap = f", longer side <= {self.max_side}" if self.max_side else ""
        return f"TTAViews({sizes}, flip={self.flip}{cap})"

    def sizes(self, original_size, input_size):
        """The distinct view sizes ``(h, w)`` of an image of ``original_size`` that the test
        loader gives at ``input_size``."""
        H, W = original_size
        if self.min_sizes is not None:
            limit = min(self.max_size or float("inf"), self.max_side or float("inf"))
            sizes = [ResizeShortestEdge.get_output_shape(H, W, s, limit) for s in self.min_sizes]
        else:  # capped scales of the input: a factor capped to 1 gives the input's size exactly
            h, w = input_size
            cap = self.max_side / max(h, w) if self.max_side else float("inf")
            sizes = [
                (int(h * f + 0.5), int(w * f + 0.5)) for f in (min(f, cap) for f in self.scales)
            ]
        return list(dict.fromkeys(sizes))  # distinct, in order

    def __call__(self, inputs):
        """``[(image tensor (C, h, w), View)]`` for one model input (a dict with ``image``,
        optional ``height``/``width``: the original size)."""
        image = inputs["image"]
        input_size = tuple(image.shape[-2:])
        original_size = (inputs.get("height", input_size[0]), inputs.get("width", input_size[1]))
        original = None
        views = []
        for size in self.sizes(original_size, input_size):
            if size == input_size:
                pixels = image
            else:
                if original is None:
                    original = _resized(image, original_size)
                pixels = _resized(original, size)
            for flip in (False, True) if self.flip else (False,):
                view = View(original_size, size, flip)
                views.append((pixels.flip(-1) if flip else pixels, view))
        return views


def _positive(value, types):
    return isinstance(value, types) and not isinstance(value, bool) and value > 0


def _resized(image, size):
    """A (C, h, w) image tensor of 0-255 values resized to ``size`` (bilinear, as
    ``ResizeShortestEdge``: the same pixels as a test loader that resizes to ``size``)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    h, w = image.shape[-2:]
    array = image.permute(1, 2, 0).cpu().numpy()
    if image.dtype != torch.uint8 and torch.equal(image, image.round()):
        array = array.astype(np.uint8)  # loader images: uint8 values, resized as uint8
    out = ResizeTransform(h, w, size[0], size[1], Image.BILINEAR).apply_image(array)
    return torch.as_tensor(np.ascontiguousarray(out.transpose(2, 0, 1))).to(image)


def _square_side(model):
    """The fixed square input side of ``model``'s backbone (ViTDet's ``square_pad``), else 0."""
    constraints = getattr(model.backbone, "padding_constraints", None) or {}
    return int(constraints.get("square_size", 0) or 0)


class _WithTTA(nn.Module):
    """A model and its views; at inference (eval mode, as the model when wrapped), one output
    dict per input, from :meth:`_predict`."""

    def __init__(self, model, views):
        super().__init__()
        self.model = model
        self.views = views
        self.train(model.training)

    def forward(self, batched_inputs):
        if self.training:
            raise RuntimeError("test-time augmentation runs in eval mode only")
        return [{"instances": self._predict(inputs)} for inputs in batched_inputs]

    def _predict(self, inputs):
        raise NotImplementedError


class RCNNWithTTA(_WithTTA):
    """
    A ``GeneralizedRCNN`` with test-time augmentation (see the module docstring for how views
    are merged). Same inputs and outputs as the model at inference: ``[{"instances": ...}]``, in
    the original image's coordinates.

    Args:
        model (GeneralizedRCNN): in eval mode; with a proposal generator; no keypoint head.
        views (TTAViews): the views of each image (``max_side`` is set from the backbone).
    """

    def __init__(self, model, views):
        for part in ("backbone", "proposal_generator", "roi_heads"):
            if getattr(model, part, None) is None:
                raise ValueError(f"{type(model).__name__} has no {part}: not an R-CNN with TTA")
        if getattr(model.roi_heads, "keypoint_on", False):
            raise ValueError("keypoint heads are not supported by test-time augmentation")
        views.max_side = _square_side(model)
        super().__init__(model, views)

    def _box_predictor(self):
        predictor = self.model.roi_heads.box_predictor
        return predictor[-1] if isinstance(predictor, nn.ModuleList) else predictor  # cascade

    def _predict(self, inputs):
        model, heads = self.model, self.model.roi_heads
        features, boxes, scores, classes = [], [], [], []
        views = self.views(inputs)
        for pixels, view in views:
            images = model.preprocess_image([{"image": pixels}])
            view_features = model.backbone(images.tensor)
            proposals, _ = model.proposal_generator(images, view_features, None)
            # the box branch alone: masks come later, from the merged boxes
            found = heads._forward_box(view_features, proposals)[0]
            features.append(view_features)
            boxes.append(view.to_original(found.pred_boxes.tensor))
            scores.append(found.scores)
            classes.append(found.pred_classes)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        predictor = self._box_predictor()
        keep = batched_nms(boxes, scores, classes, predictor.test_nms_thresh)
        keep = keep[: predictor.test_topk_per_image]
        size = views[0][1].original_size
        merged = Instances(size, pred_boxes=Boxes(boxes[keep]), scores=scores[keep])
        merged.pred_classes = classes[keep]
        if getattr(heads, "mask_on", False):
            masks = [self._view_masks(f, view, merged) for f, (_, view) in zip(features, views)]
            merged.pred_masks = torch.stack(masks).mean(0)
        return detector_postprocess(merged, *size)

    def _view_masks(self, features, view, merged):
        """Mask probabilities ``(N, 1, M, M)`` of the merged boxes, from one view's features."""
        boxes = Boxes(view.from_original(merged.pred_boxes.tensor))
        instances = Instances(view.size, pred_boxes=boxes, pred_classes=merged.pred_classes)
        masks = self.model.roi_heads.forward_with_given_boxes(features, [instances])[0].pred_masks
        return masks.flip(-1) if view.flip else masks


class DETRWithTTA(_WithTTA):
    """
    DETR with test-time augmentation: every view's queries, in the original image's
    coordinates, merged by :func:`fuse_boxes`; at most ``num_queries`` detections are kept.

    Args:
        model (fpt.modeling.DETR): in eval mode.
        views (TTAViews): the views of each image.
        iou_threshold (float): the IoU above which boxes of one class from different views are
            one object (0.55, as in the weighted box fusion paper).
    """

    def __init__(self, model, views, iou_threshold=0.55):
        super().__init__(model, views)
        self.iou_threshold = iou_threshold

    def _predict(self, inputs):
        boxes, scores, classes, view_ids = [], [], [], []
        views = self.views(inputs)
        height, width = views[0][1].original_size
        for i, (pixels, view) in enumerate(views):
            # DETR's boxes are relative to the image: scaled straight to the original size
            found = self.model([{"image": pixels, "height": height, "width": width}])[0]
            found = found["instances"]
            view_boxes = found.pred_boxes.tensor
            boxes.append(_mirror(view_boxes, width) if view.flip else view_boxes)
            scores.append(found.scores)
            classes.append(found.pred_classes)
            view_ids.append(torch.full_like(found.pred_classes, i))
        boxes, scores, classes = fuse_boxes(
            torch.cat(boxes),
            torch.cat(scores),
            torch.cat(classes),
            torch.cat(view_ids),
            len(views),
            self.iou_threshold,
        )
        keep = scores.argsort(descending=True)[: self.model.num_queries]
        result = Instances((height, width), pred_boxes=Boxes(boxes[keep]), scores=scores[keep])
        result.pred_classes = classes[keep]
        return result


def fuse_boxes(boxes, scores, classes, view_ids, num_views, iou_threshold=0.55):
    """
    Weighted box fusion across views, at most one box of each view per fused box.

    Per class, boxes are taken by decreasing score; each joins the fused box it overlaps most
    (IoU with the fused box > ``iou_threshold``) among those that hold no box of its view yet,
    else starts a new one. A fused box is the score-weighted mean of its boxes; its score is the
    sum of their scores over ``num_views`` (the mean over views, 0 where a view missed it).

    Args:
        boxes (Tensor): (N, 4) XYXY, in one image's coordinates.
        scores (Tensor): (N,) scores in [0, 1].
        classes (Tensor): (N,) class indices.
        view_ids (Tensor): (N,) the view (0 .. num_views - 1) each box comes from.
        num_views (int): how many views were run.
        iou_threshold (float): see above.

    Returns:
        (boxes (M, 4), scores (M,), classes (M,)): the fused boxes, by class, then by the order
        in which they started.
    """
    out_boxes, out_scores, out_classes = [], [], []
    for c in classes.unique(sorted=True):
        idx = (classes == c).nonzero()[:, 0]
        idx = idx[scores[idx].argsort(descending=True, stable=True)]
        weighted = boxes.new_zeros((len(idx), 4))  # sum of score x box, per fused box
        total = scores.new_zeros(len(idx))  # sum of scores
        holds = torch.zeros((len(idx), num_views), dtype=torch.bool, device=boxes.device)
        count = 0
        for i in idx.tolist():
            box, score, view = boxes[i], scores[i], int(view_ids[i])
            target = count
            if count:
                fused = weighted[:count] / total[:count, None].clamp_min(1e-12)
                iou = box_iou(box[None], fused)[0]
                iou[holds[:count, view]] = -1.0
                best = int(iou.argmax())
                if iou[best] > iou_threshold:
                    target = best
            if target == count:
                count += 1
            weighted[target] += score * box
            total[target] += score
            holds[target, view] = True
        out_boxes.append(weighted[:count] / total[:count, None].clamp_min(1e-12))
        out_scores.append(total[:count] / num_views)
        out_classes.append(classes.new_full((count,), int(c)))
    if not out_boxes:
        return boxes.new_zeros((0, 4)), scores.new_zeros(0), classes.new_zeros(0)
    return torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_classes)


def with_tta(model, min_sizes=None, max_size=None, scales=(1.0,), flip=True):
    """``model`` (a ``GeneralizedRCNN`` or :class:`~fpt.modeling.DETR`, or either wrapped by
    DDP) wrapped for test-time augmentation with these views (see :class:`TTAViews`).
    Raises ValueError for another model or bad view settings."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    views = TTAViews(min_sizes, max_size, scales, flip)
    if isinstance(model, DETR):
        wrapped = DETRWithTTA(model, views)
    elif hasattr(model, "roi_heads") and hasattr(model, "proposal_generator"):
        wrapped = RCNNWithTTA(model, views)
    else:
        raise ValueError(
            f"test-time augmentation supports R-CNN (GeneralizedRCNN) and DETR models, "
            f"not {type(model).__name__}"
        )
    logger.info(f"Test-time augmentation: {views}")
    return wrapped
