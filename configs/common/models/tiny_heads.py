"""Light RPN and RoI heads for the tiny CPU configs (few classes, 128 px images, thin pyramid)."""

from detectron2.layers import ShapeSpec


def make_heads_tiny(model, channels, num_classes=3, roi_batch_size=128):
    """Shrink the heads of detectron2's ``common/models/mask_rcnn_fpn.py`` (in place) for a
    ``channels``-wide pyramid: smaller anchors, fewer proposals and RoI samples, ``num_classes``
    classes. The box/mask head layer widths stay the caller's choice (box head ends at 256)."""
    rpn = model.proposal_generator
    rpn.head.in_channels = channels
    rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
    rpn.batch_size_per_image = 128
    rpn.pre_nms_topk = (600, 300)
    rpn.post_nms_topk = (300, 100)

    roi = model.roi_heads
    roi.num_classes = num_classes
    roi.batch_size_per_image = roi_batch_size
    roi.box_head.input_shape = ShapeSpec(channels=channels, height=7, width=7)
    roi.box_predictor.input_shape = ShapeSpec(channels=256)
    roi.mask_head.input_shape = ShapeSpec(channels=channels, height=14, width=14)
