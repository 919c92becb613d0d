"""Large-scale-jitter (LSJ) data config of ViTDet."""

import os

import numpy as np
import pytest

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


def _photos():
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.camera()]  # camera: grayscale


@pytest.mark.parametrize("pad", [False, True])
def test_resize_scale_crop_equals_resize_scale_then_fixed_size_crop(pad):
    """The fused augmentation against upstream's two in a row, same seeds: the same sizes, boxes,
    polygons and masks exactly; pixels equal up to Pillow's rounding of the region's offsets."""
    from fpt.data.transforms import ResizeScaleCrop

    upstream = T.AugmentationList(
        [
            T.RandomFlip(horizontal=True),
            T.ResizeScale(0.1, 2.0, 512, 512),
            T.FixedSizeCrop((512, 512), pad=pad),
        ]
    )
    fused = T.AugmentationList(
        [T.RandomFlip(horizontal=True), ResizeScaleCrop(0.1, 2.0, 512, 512, pad=pad)]
    )
    differing = total = 0
    for seed, image in enumerate(_photos() * 6):
        h, w = image.shape[:2]
        boxes = np.array([[w * 0.1, h * 0.2, w * 0.7, h * 0.9]], dtype=np.float32)
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[h // 4 : h // 2, w // 3 : w // 2] = 1
        polygon = [np.array([w * 0.2, h * 0.2, w * 0.9, h * 0.3, w * 0.5, h * 0.95])]
        out = []
        for augs in (upstream, fused):
            np.random.seed(seed)
            aug_input = T.AugInput(image.copy(), boxes=boxes.copy(), sem_seg=mask.copy())
            transforms = augs(aug_input)
            out.append(
                (aug_input, transforms.apply_polygons([p.reshape(-1, 2).copy() for p in polygon]))
            )
        (a, poly_a), (b, poly_b) = out
        assert a.image.shape == b.image.shape and a.image.dtype == b.image.dtype
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.sem_seg, b.sem_seg)
        assert len(poly_a) == len(poly_b)
        assert all(np.array_equal(p, q) for p, q in zip(poly_a, poly_b))
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        assert diff.max() <= 2, (seed, diff.max())
        differing, total = differing + np.count_nonzero(diff), total + diff.size
    assert differing / total < 0.01  # measured 0.2% on the sample photos

    # float images take detectron2's path (torch interpolation), unchanged
    np.random.seed(0)
    image = np.random.rand(40, 60, 3).astype(np.float32)
    np.random.seed(1)
    a = upstream.augs[1].get_transform(image)
    a = (
        upstream.augs[2]
        .get_transform(np.empty((a.new_h, a.new_w, 3)))
        .apply_image(a.apply_image(image))
    )
    np.random.seed(1)
    b = fused.augs[1].get_transform(image).apply_image(image)
    assert np.array_equal(a, b)
