"""The box predictor for LVIS v1 (1203 classes, up to 300 detections per image), for a Mask
R-CNN made from detectron2's ``common/models/mask_rcnn_fpn.py``."""

from fpt.modeling import FedLossFastRCNNOutputLayers


def make_heads_lvis(
    model, num_classes=1203, score_thresh=0.02, fed_loss=True, fed_loss_num_classes=50
):
    """Set the RoI heads of ``model`` for LVIS (in place): ``num_classes`` classes, up to 300
    detections per image scoring at least ``score_thresh``. With ``fed_loss`` (upstream's ViTDet
    LVIS configs), the box predictor is :class:`~fpt.modeling.FedLossFastRCNNOutputLayers`
    (detectron2 0.6 has no federated loss) with sigmoid cross-entropy and the federated loss
    over ``fed_loss_num_classes`` classes, weighted by the training set's per-class image
    counts to the power 0.5."""
    model.roi_heads.num_classes = num_classes
    predictor = model.roi_heads.box_predictor
    predictor.test_score_thresh = score_thresh
    predictor.test_topk_per_image = 300
    if fed_loss:
        predictor._target_ = FedLossFastRCNNOutputLayers
        predictor.use_sigmoid_ce = True
        predictor.use_fed_loss = True
        predictor.fed_loss_datasets = "${dataloader.train.dataset.names}"
        predictor.fed_loss_freq_weight_power = 0.5
        predictor.fed_loss_num_classes = fed_loss_num_classes
