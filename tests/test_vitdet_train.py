"""The tiny ViTDet Mask R-CNN config trains on CPU and predicts instances."""

import os

import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.structures import BitMasks, Boxes, Instances
from support import assert_loss_falls, train_steps


def synthetic_batch(n=2, size=128):
    """Images with bright rectangles on a dark background; boxes, classes and masks."""
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(n):
        image = torch.full((3, size, size), 20.0)
        boxes, classes, masks = [], [], []
        for c in range(2):
            x0, y0 = torch.randint(0, size - 48, (2,), generator=g).tolist()
            w, h = torch.randint(24, 48, (2,), generator=g).tolist()
            image[c, y0 : y0 + h, x0 : x0 + w] = 230.0
            mask = torch.zeros(size, size, dtype=torch.bool)
            mask[y0 : y0 + h, x0 : x0 + w] = True
            boxes.append([x0, y0, x0 + w, y0 + h])
            classes.append(c)
            masks.append(mask)
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(classes)
        inst.gt_masks = BitMasks(torch.stack(masks))
        batch.append({"image": image, "instances": inst, "height": size, "width": size})
    return batch


def test_tiny_vitdet_trains_and_predicts(repo_root):
    cfg = LazyConfig.load(os.path.join(repo_root, "configs/Shapes/vitdet_mask_rcnn_tiny.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model.backbone.net.use_act_checkpoint = True  # exercised in training
    cfg.optimizer.params.model = model
    cfg.optimizer.lr = 1e-3
    optimizer = instantiate(cfg.optimizer)
    batch = synthetic_batch(n=1)
    model.roi_heads.batch_size_per_image = 64
    losses, loss_dict = train_steps(model, batch, 8, optimizer)
    assert {"loss_rpn_cls", "loss_cls", "loss_box_reg", "loss_mask"} <= set(loss_dict)
    assert_loss_falls(losses)
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.net.blocks.0")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    with torch.no_grad():
        outputs = model([{"image": b["image"], "height": 96, "width": 96} for b in batch])
    inst = outputs[0]["instances"]
    assert len(inst) > 0
    assert inst.image_size == (96, 96)
    assert inst.pred_masks.shape[1:] == (96, 96)
    assert inst.scores.min() >= 0 and inst.scores.max() <= 1
    assert set(inst.pred_classes.tolist()) <= {0, 1, 2}
