"""What gets exported: each family's model wrapped as ``image -> tuple of tensors``.

The exported graph takes one image, ``(3, H, W)`` float32 with 0-255 values, already resized by
the config's test resize and in the model's channel order; normalization (pixel mean/std) and
padding happen inside. What it returns, per family (``OUTPUTS``):

* R-CNN (``instances``): ``pred_boxes`` (N, 4) XYXY in input pixels, ``scores`` (N,),
  ``pred_classes`` (N,) int64 and, with a mask head, ``pred_masks`` (N, 1, M, M) mask
  probabilities in each box, as ``GeneralizedRCNN.inference(..., do_postprocess=False)``;
* DETR (``detr``): ``pred_boxes`` (Q, 4) XYXY normalized by the input size, ``scores`` and
  ``pred_classes`` (Q,): DETR's best real class and its softmax probability, every query;
* semantic (``sem_seg``): ``sem_seg`` (K, Hp, Wp) logits of the padded input.

The rest (scaling boxes to the original image, pasting masks, cropping and resizing the
segmentation) is detectron2's post-processing, run by :mod:`fpt.export.runner` as the eager
model runs it.
"""

import contextlib
from typing import Dict

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

__all__ = ["OUTPUTS", "make_adapter", "plain_attributes"]

OUTPUTS = {
    "instances": ("pred_boxes", "scores", "pred_classes"),
    "instances_masks": ("pred_boxes", "scores", "pred_classes", "pred_masks"),
    "detr": ("pred_boxes", "scores", "pred_classes"),
    "sem_seg": ("sem_seg",),
}


def output_names(family, model):
    if family.outputs == "instances" and model.roi_heads.mask_on:
        return OUTPUTS["instances_masks"]
    return OUTPUTS[family.outputs]


def output_axes(family, names):
    """ONNX dynamic axes of the outputs: the instance count, or the map's height and width."""
    if family.outputs == "sem_seg":
        return {"sem_seg": {1: "sem_seg_height", 2: "sem_seg_width"}}
    return {name: {0: "instances"} for name in names}


class RCNNTracing(nn.Module):
    def __init__(self, model, names):
        super().__init__()
        self.model = model
        self.with_masks = "pred_masks" in names

    def forward(self, image):
        from detectron2.export.torchscript_patch import patch_builtin_len

        # patch_builtin_len: len(Instances) as a traced value (detectron2's TracingAdapter does it)
        with torch.no_grad(), patch_builtin_len(), _identity_scale_gradient():
            instances = self.model.inference([{"image": image}], do_postprocess=False)[0]
            outputs = (instances.pred_boxes.tensor, instances.scores, instances.pred_classes)
            if self.with_masks:
                outputs += (instances.pred_masks,)
            return outputs


class _IdentityScaleGradient:
    """Cascade R-CNN's ``_ScaleGradient`` is the identity in the forward pass (it scales
    gradients); as a Python autograd function it cannot be saved in a traced graph."""

    @staticmethod
    def apply(x, scale):
        return x


@contextlib.contextmanager
def _identity_scale_gradient():
    from detectron2.modeling.roi_heads import cascade_rcnn

    original = cascade_rcnn._ScaleGradient
    cascade_rcnn._ScaleGradient = _IdentityScaleGradient
    try:
        yield
    finally:
        cascade_rcnn._ScaleGradient = original


class RCNNScripting(nn.Module):
    """detectron2's ``tools/deploy/export_model.py`` scripting adapter: fields as a dict (a
    scripted ``Instances`` cannot leave the module)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Dict[str, Tensor]:
        instances = self.model.inference([{"image": image}], do_postprocess=False)
        return instances[0].get_fields()


class DetrTracing(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        from ..modeling.detr import box_cxcywh_to_xyxy

        with torch.no_grad():
            images = self.model.preprocess_image([{"image": image}])
            logits, boxes = self.model.predict(images)
            # as DETR.inference: best real class and its probability, every query
            scores, labels = F.softmax(logits[-1, 0], dim=-1)[:, :-1].max(-1)
            return box_cxcywh_to_xyxy(boxes[-1, 0]), scores, labels


class SemSegTracing(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        from detectron2.structures import ImageList

        model = self.model
        with torch.no_grad():  # as SemanticSegmentor.forward, up to the post-processing
            x = (image.to(model.device) - model.pixel_mean) / model.pixel_std
            images = ImageList.from_tensors([x], model.backbone.size_divisibility)
            results, _ = model.sem_seg_head(model.backbone(images.tensor), None)
            return (results[0],)


def make_adapter(family, model, method):
    """(module to trace or script, output names) for a built model in eval mode."""
    names = output_names(family, model)
    if method == "scripting":  # only R-CNN (see families.SUPPORT)
        return RCNNScripting(model).eval(), names
    if family.outputs == "detr":
        return DetrTracing(model).eval(), names
    if family.outputs == "sem_seg":
        return SemSegTracing(model).eval(), names
    return RCNNTracing(model, names).eval(), names


def plain_attributes(model):
    """Replace omegaconf lists/dicts that ``instantiate`` left as module attributes (e.g.
    ``ResNet._out_features``) by plain Python ones, in place: TorchScript cannot type them.
    Behaviour is unchanged."""
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, (ListConfig, DictConfig)):
                setattr(module, name, OmegaConf.to_container(value, resolve=True))
    return model
