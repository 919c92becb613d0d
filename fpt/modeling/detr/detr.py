"""DETR (Carion et al., ECCV 2020) as a detectron2 meta-architecture, with optional iRPE in the
encoder (DETR-with-iRPE, Wu et al., ICCV 2021).

Same math as official DETR (``facebookresearch/detr``) so that its converted checkpoints give its
outputs (see ``tools/convert_detr_checkpoint.py``): images are normalized, padded bottom/right to
the batch's largest image with **no** size divisibility; the padding mask is resized to the
feature map by nearest interpolation (as main DETR; DETR's own detectron2 wrapper uses a ceil rule
that differs on padded batches); inference keeps all queries, in query order.
"""

import logging
import re

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage

from fpt.checkpoint.errors import CheckpointError

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer

__all__ = ["DETR", "MLP", "detr_lr_factor"]

logger = logging.getLogger(__name__)

DEFAULT_LOSS_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def detr_lr_factor(name):
    """DETR's lr multiplier of a parameter: 0.1 for the backbone (names containing
    "backbone"), 1 otherwise (iRPE tables included). For ``optimizer.params.lr_factor_func``."""
    return 0.1 if "backbone" in name else 1.0


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (DETR's box head; keys
    ``layers.{i}``). (..., input_dim) -> (..., output_dim)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


@META_ARCH_REGISTRY.register()
class DETR(nn.Module):
    """DETR: backbone -> 1x1 projection -> transformer (encoder over the feature map + sine
    position encoding, decoder over ``num_queries`` learned queries) -> class and box heads.

    Training returns the weighted set losses of every decoder layer (18 with 6 layers);
    inference returns, per image, ``num_queries`` instances in query order: the best real class
    and its softmax probability, and the box in original image coordinates (clipped). Nothing
    is thresholded or suppressed: filter on ``scores`` afterwards.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone,
        transformer,
        num_classes,
        num_queries=100,
        in_feature="res5",
        position_encoding=None,
        criterion=None,
        loss_weights=None,
        aux_loss=True,
        pixel_mean=(123.675, 116.28, 103.53),
        pixel_std=(58.395, 57.12, 57.375),
        input_format="RGB",
    ):
        """
        Args:
            backbone (Backbone): e.g. a detectron2 ResNet-50 with FrozenBN, ``freeze_at=2``.
            transformer (Transformer): see :class:`Transformer` (``enc_rpe`` for iRPE).
            num_classes (int): K object classes; the class head has K + 1 outputs (the last one
                is "no object").
            num_queries (int): object queries (DETR: 100).
            in_feature (str): the backbone output fed to the transformer.
            position_encoding (nn.Module): mask (B, h, w) -> (B, d_model, h, w); default
                ``PositionEmbeddingSine(d_model // 2, normalize=True)``.
            criterion (nn.Module): default ``SetCriterion(K, HungarianMatcher(1, 5, 2), 0.1)``.
            loss_weights (dict): weight of each loss (without layer suffix); default ce 1,
                bbox 5, giou 2.
            aux_loss (bool): losses on every decoder layer, not only the last.
            pixel_mean, pixel_std (tuple[float]): input normalization (0-255 values).
            input_format (str): channel order of the input images, "RGB" (DETR) or "BGR".
        """
        super().__init__()
        self.backbone = backbone
        self.in_feature = in_feature
        self.transformer = transformer
        self.num_classes = num_classes
        self.num_queries = num_queries
        d_model = transformer.d_model
        self.position_encoding = position_encoding or PositionEmbeddingSine(d_model // 2)
        in_channels = backbone.output_shape()[in_feature].channels
        self.input_proj = nn.Conv2d(in_channels, d_model, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.criterion = criterion or SetCriterion(num_classes, HungarianMatcher())
        self.loss_weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
        self.aux_loss = aux_loss
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        d = cfg.MODEL.DETR
        if d.PRE_NORM:
            raise ValueError("MODEL.DETR.PRE_NORM=True is not supported: DETR is post-norm")
        from .config import rpe_from_yacs

        return dict(
            backbone=build_backbone(cfg),
            in_feature=cfg.MODEL.RESNETS.OUT_FEATURES[-1],
            transformer=Transformer(
                d_model=d.HIDDEN_DIM,
                nhead=d.NHEADS,
                num_encoder_layers=d.ENC_LAYERS,
                num_decoder_layers=d.DEC_LAYERS,
                dim_feedforward=d.DIM_FEEDFORWARD,
                dropout=d.DROPOUT,
                enc_rpe=rpe_from_yacs(d.ENC_RPE),
                use_checkpoint=d.USE_CHECKPOINT,
            ),
            num_classes=d.NUM_CLASSES,
            num_queries=d.NUM_OBJECT_QUERIES,
            criterion=SetCriterion(
                d.NUM_CLASSES,
                HungarianMatcher(cost_class=1.0, cost_bbox=d.L1_WEIGHT, cost_giou=d.GIOU_WEIGHT),
                eos_coef=d.NO_OBJECT_WEIGHT,
            ),
            loss_weights={"loss_ce": 1.0, "loss_bbox": d.L1_WEIGHT, "loss_giou": d.GIOU_WEIGHT},
            aux_loss=d.DEEP_SUPERVISION,
            pixel_mean=tuple(cfg.MODEL.PIXEL_MEAN),
            pixel_std=tuple(cfg.MODEL.PIXEL_STD),
            input_format=cfg.INPUT.FORMAT,
        )

    @property
    def device(self):
        return self.pixel_mean.device

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        official = prefix + "backbone.0.body."
        if any(k.startswith(official) for k in state_dict):
            raise CheckpointError(
                "this is an official DETR checkpoint (keys 'backbone.0.body.*'): convert it "
                "first with python tools/convert_detr_checkpoint.py IN OUT, then load OUT"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- forward -------------------------------------------------------------------------
    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): detectron2's format: ``image`` (3, H, W) in
                ``input_format``, ``instances`` (training), optional ``height``/``width``.
        Returns:
            training: dict of weighted losses; inference: list of ``{"instances": Instances}``.
        """
        images = self.preprocess_image(batched_inputs)
        pred_logits, pred_boxes = self.predict(images)
        if self.training:
            return self.losses(pred_logits, pred_boxes, batched_inputs, images.image_sizes)
        results = []
        for logits, boxes, image_size, inputs in zip(
            pred_logits[-1], pred_boxes[-1], images.image_sizes, batched_inputs
        ):  # boxes are normalized by the unpadded size: scaled straight to the original size
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            results.append({"instances": self.inference(logits, boxes, (height, width))})
        return results

    def preprocess_image(self, batched_inputs):
        """Normalize, then pad bottom/right with 0 to the largest image (no size divisibility)."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, size_divisibility=0)

    def padding_mask(self, images, feature_size):
        """(B, h, w) bool, True on padding: the padded batch's pixel mask resized to the feature
        map by nearest interpolation, as main DETR. Nearest sampling keeps cell (0, 0) of every
        non-empty image valid (a 10x10 image in a 1000x1000 batch keeps one cell), so all-padding
        feature rows (NaN in DETR, facebookresearch/detr#101) cannot occur; an empty image
        raises one line."""
        B, _, H, W = images.tensor.shape
        mask = torch.ones((B, H, W), dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(images.image_sizes):
            mask[i, :h, :w] = False
        mask = F.interpolate(mask[None].float(), size=feature_size).to(torch.bool)[0]
        empty = mask.flatten(1).all(dim=1)
        if not torch.jit.is_tracing() and empty.any():  # a data-dependent check: eager only
            sizes = ", ".join(f"{h}x{w}" for h, w in images.image_sizes)
            raise ValueError(
                f"DETR: image {int(empty.nonzero()[0])} has no valid cell on the "
                f"{feature_size[0]}x{feature_size[1]} feature map of the padded batch {H}x{W} "
                f"(image sizes {sizes})"
            )
        return mask

    def predict(self, images):
        """-> class logits (L, B, Q, K + 1), normalized cxcywh boxes (L, B, Q, 4), L = the
        decoder layers (all of them, the last last)."""
        features = self.backbone(images.tensor)[self.in_feature]
        mask = self.padding_mask(images, features.shape[-2:])
        pos = self.position_encoding(mask).to(features.dtype)
        hs = self.transformer(self.input_proj(features), mask, self.query_embed.weight, pos)[0]
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    # ---- training ------------------------------------------------------------------------
    def prepare_targets(self, batched_inputs, image_sizes):
        """Per image ``labels`` (T,) and ``boxes`` (T, 4): gt boxes as cxcywh normalized by the
        unpadded image size."""
        targets = []
        for inputs, (h, w) in zip(batched_inputs, image_sizes):
            if "instances" not in inputs:
                raise ValueError("DETR in training mode needs 'instances' in every input")
            gt = inputs["instances"].to(self.device)
            scale = torch.as_tensor([w, h, w, h], dtype=torch.float, device=self.device)
            boxes = box_xyxy_to_cxcywh(gt.gt_boxes.tensor / scale)
            targets.append({"labels": gt.gt_classes, "boxes": boxes})
        return targets

    def losses(self, pred_logits, pred_boxes, batched_inputs, image_sizes):
        if not self.aux_loss:
            pred_logits, pred_boxes = pred_logits[-1:], pred_boxes[-1:]
        targets = self.prepare_targets(batched_inputs, image_sizes)
        losses, stats = self.criterion(pred_logits, pred_boxes, targets)
        try:
            get_event_storage().put_scalars(**stats)
        except AssertionError:  # called outside a trainer (no EventStorage): nowhere to log
            pass
        # "loss_bbox_3" (decoder layer 3) is weighted as "loss_bbox"
        return {k: v * self.loss_weights[re.sub(r"_\d+$", "", k)] for k, v in losses.items()}

    # ---- inference -----------------------------------------------------------------------
    def inference(self, logits, boxes, output_size):
        """
        Args:
            logits (Tensor): (Q, K + 1).
            boxes (Tensor): (Q, 4) cxcywh normalized by the unpadded image size the model saw.
            output_size (tuple[int, int]): the original (height, width).
        Returns:
            Instances: Q instances in query order (``pred_boxes``, ``scores``,
            ``pred_classes``), boxes in ``output_size`` pixels, clipped to the image.
        """
        scores, labels = F.softmax(logits, dim=-1)[:, :-1].max(-1)
        out_h, out_w = output_size
        scale = torch.as_tensor(
            [out_w, out_h, out_w, out_h], dtype=boxes.dtype, device=boxes.device
        )
        pred_boxes = Boxes(box_cxcywh_to_xyxy(boxes) * scale)
        pred_boxes.clip((out_h, out_w))
        result = Instances((out_h, out_w))
        result.pred_boxes = pred_boxes
        result.scores = scores
        result.pred_classes = labels
        return result
