"""Large-scale-jitter (LSJ) data config of ViTDet."""

import os

import numpy as np

import detectron2.data.transforms as T
from detectron2.config import LazyConfig, instantiate


def test_lsj_augmentations(repo_root):
    cfg = LazyConfig.load(os.path.join(repo_root, "configs/common/coco_loader_lsj.py"))
    mapper = cfg.dataloader.train.mapper
    assert mapper.image_format == "RGB" and mapper.recompute_boxes
    assert cfg.dataloader.train.total_batch_size == 64
    augs = T.AugmentationList([instantiate(a) for a in mapper.augmentations])
    np.random.seed(0)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[100:200, 300:500] = 255
    box = np.array([[300, 100, 500, 200]], dtype=np.float32)
    sizes = set()
    for _ in range(20):
        aug_input = T.AugInput(image.copy(), boxes=box.copy())
        augs(aug_input)
        h, w = aug_input.image.shape[:2]
        sizes.add((h, w))
        assert h <= 1024 and w <= 1024  # cropped to at most 1024x1024, no padding
        ys, xs = np.nonzero(aug_input.image[..., 0] > 127)
        if len(xs):  # the bright rectangle is where the transformed box says
            x0, y0, x1, y1 = np.clip(aug_input.boxes[0], 0, [w, h, w, h])  # crop may cut it
            assert abs(xs.min() - x0) <= 2 and abs(xs.max() + 1 - x1) <= 2
            assert abs(ys.min() - y0) <= 2 and abs(ys.max() + 1 - y1) <= 2
    assert len(sizes) > 5 and min(max(s) for s in sizes) < 400  # scales 0.1..2.0 of 1024

    test_aug = instantiate(cfg.dataloader.test.mapper.augmentations[0])
    out = test_aug.get_transform(image).apply_image(image)
    assert out.shape[:2] == (768, 1024)
