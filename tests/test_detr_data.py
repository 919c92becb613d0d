"""DETR's data pipeline (fpt/data/detr_mapper.py) against docs/irpe_detr.md section 6.

Official DETR's ``get_size_with_aspect_ratio`` (``datasets/transforms.py``) is written out here;
the mapper runs on a synthetic dataset dict with a small image written to ``tmp_path``.
"""

import copy
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

import detectron2.data.transforms as T
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import BoxMode

from fpt.data.detr_mapper import (
    DETR_TRAIN_SIZES,
    DetrDatasetMapper,
    DetrResize,
    RandomSelect,
    detr_output_shape,
)

ALLOWED_SHORT = set(range(480, 801, 32))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROWD_CLASS = 2


def official_get_size_with_aspect_ratio(image_size, size, max_size=None):
    """facebookresearch/detr datasets/transforms.py (image_size is PIL's (w, h)) -> (h, w)."""
    w, h = image_size
    if max_size is not None:
        min_original_size = float(min((w, h)))
        max_original_size = float(max((w, h)))
        if max_original_size / min_original_size * size > max_size:
            size = int(round(max_size * min_original_size / max_original_size))
    if (w <= h and w == size) or (h <= w and h == size):
        return (h, w)
    if w < h:
        ow = size
        oh = int(size * h / w)
    else:
        oh = size
        ow = int(size * w / h)
    return (oh, ow)


def write_image(path, height, width):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def annotation(xyxy, category_id, iscrowd=0):
    x0, y0, x1, y1 = xyxy
    return {
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": category_id,
        "iscrowd": iscrowd,
    }


@pytest.fixture
def dataset_dict(tmp_path):
    """A 240 x 320 image with two boxes and a crowd box."""
    return {
        "file_name": write_image(tmp_path / "a.png", 240, 320),
        "height": 240,
        "width": 320,
        "image_id": 1,
        "annotations": [
            annotation([10, 10, 70, 50], 0),
            annotation([250, 180, 310, 230], 1),
            annotation([100, 100, 180, 180], CROWD_CLASS, iscrowd=1),
        ],
    }


def coco_detr_mapper(is_train):
    cfg = LazyConfig.load(os.path.join(REPO, "configs/common/data/coco_detr.py"))
    assert cfg.dataloader.train.dataset.filter_empty is False  # images without boxes kept
    return instantiate(cfg.dataloader.train.mapper if is_train else cfg.dataloader.test.mapper)


# ---------------------------------------------------------------------------------------------
# train: sizes, flip, crop, crowd
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["default", "config"])
def test_train_sizes_are_in_the_allowed_sets(dataset_dict, source):
    mapper = DetrDatasetMapper(is_train=True) if source == "default" else coco_detr_mapper(True)
    assert mapper.image_format == "RGB" and not mapper.use_instance_mask
    kept_aspect, cropped, flipped = 0, 0, 0
    for seed in range(16):
        np.random.seed(seed)
        random.seed(seed)
        out = mapper(copy.deepcopy(dataset_dict))
        h, w = out["image"].shape[1:]
        # branch A: one resize of the shorter side; branch B: resize, crop, the same resize
        assert min(h, w) in ALLOWED_SHORT and max(h, w) <= 1333, (seed, h, w)
        inst = out["instances"]
        assert inst.image_size == (h, w)
        classes = inst.gt_classes.tolist()
        assert CROWD_CLASS not in classes and len(classes) <= 2
        boxes = inst.gt_boxes.tensor
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        if (h, w) == official_get_size_with_aspect_ratio((320, 240), min(h, w), 1333):
            kept_aspect += 1  # branch A: both boxes kept, scaled, maybe mirrored
            assert classes == [0, 1]
            s = h / 240
            plain = torch.tensor([10, 10, 70, 50]) * torch.tensor([w / 320, s, w / 320, s])
            mirror = torch.tensor([w - plain[2], plain[1], w - plain[0], plain[3]])
            if torch.allclose(boxes[0], mirror, atol=1.0):
                flipped += 1
            else:
                torch.testing.assert_close(boxes[0], plain.float(), atol=1.0, rtol=0)
        else:
            cropped += 1
    assert kept_aspect >= 3 and cropped >= 3 and 1 <= flipped < kept_aspect


class FixedCrop(T.Augmentation):
    """The top-left 100 x 100 pixels."""

    def get_transform(self, image):
        return T.CropTransform(0, 0, 100, 100)


def test_crop_removes_emptied_boxes_and_crowd(dataset_dict):
    dataset_dict["annotations"].append(annotation([80, 60, 200, 200], 3))  # cut by the crop
    mapper = DetrDatasetMapper(is_train=True, augmentations=[FixedCrop()])
    out = mapper(dataset_dict)
    assert tuple(out["image"].shape) == (3, 100, 100)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 3]  # box 1 outside the crop, crowd dropped
    torch.testing.assert_close(
        inst.gt_boxes.tensor, torch.tensor([[10.0, 10.0, 70.0, 50.0], [80.0, 60.0, 100.0, 100.0]])
    )


def test_image_without_annotations_is_kept(dataset_dict):
    dataset_dict["annotations"] = []
    np.random.seed(0)
    out = DetrDatasetMapper(is_train=True)(dataset_dict)
    assert out is not None and len(out["instances"]) == 0
    assert min(out["image"].shape[1:]) in ALLOWED_SHORT
    # only crowd boxes: kept, with no instance
    np.random.seed(1)
    only_crowd = dict(dataset_dict, annotations=[annotation([1, 1, 50, 50], 0, iscrowd=1)])
    assert len(DetrDatasetMapper(is_train=True)(only_crowd)["instances"]) == 0


def test_unreadable_training_image_is_skipped(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    item = {"file_name": str(bad), "height": 10, "width": 10, "image_id": 2, "annotations": []}
    assert DetrDatasetMapper(is_train=True)(item) is None


def describe(aug):
    """The augmentations' types and parameters as nested tuples."""
    if isinstance(aug, T.AugmentationList):
        return tuple(describe(a) for a in aug.augs)
    if isinstance(aug, RandomSelect):
        return ("RandomSelect", aug.p, describe(aug.first), describe(aug.second))
    if isinstance(aug, DetrResize):
        return ("DetrResize", tuple(aug.short_edge_length), aug.max_size, aug.is_range)
    if isinstance(aug, T.RandomCrop):
        return ("RandomCrop", aug.crop_type, tuple(aug.crop_size))
    if isinstance(aug, T.RandomFlip):
        return ("RandomFlip", aug.prob, aug.horizontal, aug.vertical)
    raise AssertionError(f"unexpected augmentation {aug}")


def test_config_augmentations_equal_the_default():
    sizes = tuple(range(480, 801, 32))
    expected = (
        ("RandomFlip", 0.5, True, False),
        (
            "RandomSelect",
            0.5,
            (("DetrResize", sizes, 1333, False),),
            (
                ("DetrResize", (400, 500, 600), None, False),
                ("RandomCrop", "absolute_range", (384, 600)),
                ("DetrResize", sizes, 1333, False),
            ),
        ),
    )
    assert describe(DetrDatasetMapper(is_train=True).augmentations) == expected
    assert describe(coco_detr_mapper(True).augmentations) == expected
    test = (("DetrResize", (800, 800), 1333, False),)
    assert describe(DetrDatasetMapper(is_train=False).augmentations) == test
    assert describe(coco_detr_mapper(False).augmentations) == test


def test_train_branch_transforms():
    """The transforms drawn: [flip or no-op, resize] (A) or [flip or no-op, resize to 400, 500
    or 600, crop of 384-600 a side, resize] (B), each about half the time."""
    augs = DetrDatasetMapper(is_train=True).augmentations
    np.random.seed(0)
    branches = {"A": 0, "B": 0}
    flips = 0
    for _ in range(40):
        tfms = augs(T.AugInput(np.zeros((240, 320, 3), np.uint8))).transforms
        flips += isinstance(tfms[0], T.HFlipTransform)
        assert isinstance(tfms[0], (T.HFlipTransform, T.NoOpTransform))
        if len(tfms) == 2:
            branches["A"] += 1
        else:
            branches["B"] += 1
            first, crop = tfms[1], tfms[2]
            assert (first.new_h, first.new_w) in {(400, 533), (500, 666), (600, 800)}
            assert isinstance(crop, T.CropTransform)
            assert 384 <= crop.h <= 600 and 384 <= crop.w <= 600
            assert crop.y0 + crop.h <= first.new_h and crop.x0 + crop.w <= first.new_w
        final = tfms[-1]
        assert isinstance(final, T.ResizeTransform)
        short = min(final.new_h, final.new_w)
        assert short in ALLOWED_SHORT
        assert (final.new_h, final.new_w) == official_get_size_with_aspect_ratio(
            (final.w, final.h), short, 1333
        )
    assert branches["A"] >= 10 and branches["B"] >= 10 and 10 <= flips <= 30


def test_train_long_side_capped(tmp_path):
    """A 100 x 300 image: branch A hits the 1333 cap (short side round(1333 / 3) = 444)."""
    item = {
        "file_name": write_image(tmp_path / "wide.png", 100, 300),
        "height": 100,
        "width": 300,
        "image_id": 4,
        "annotations": [annotation([0, 0, 300, 100], 0)],
    }
    mapper = DetrDatasetMapper(is_train=True)
    shapes = set()
    for seed in range(12):
        np.random.seed(seed)
        h, w = mapper(copy.deepcopy(item))["image"].shape[1:]
        assert max(h, w) <= 1333
        assert min(h, w) in ALLOWED_SHORT or (h, w) == (444, 1332)
        shapes.add((h, w))
    assert (444, 1332) in shapes and len(shapes) > 1


# ---------------------------------------------------------------------------------------------
# test: 800 / 1333 with DETR's truncation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["default", "config"])
def test_test_resize_800_1333(tmp_path, source):
    mapper = DetrDatasetMapper(is_train=False) if source == "default" else coco_detr_mapper(False)
    cases = {(480, 640): (800, 1066), (640, 480): (1066, 800), (100, 300): (444, 1332)}
    for (h, w), expected in cases.items():
        file_name = write_image(tmp_path / f"{h}x{w}.png", h, w)
        item = {"file_name": file_name, "height": h, "width": w, "image_id": 3}
        out = mapper(item)
        assert tuple(out["image"].shape[1:]) == expected
        assert (out["height"], out["width"]) == (h, w)  # the original size, for inference
    # detectron2's ResizeShortestEdge rounds instead: 1067 wide
    image = np.zeros((480, 640, 3), np.uint8)
    tfm = T.ResizeShortestEdge(800, 1333).get_transform(image)
    assert (tfm.new_h, tfm.new_w) == (800, 1067)


def test_detr_output_shape_equals_official():
    assert detr_output_shape(480, 640, 800, 1333) == (800, 1066)
    assert detr_output_shape(100, 300, 800, 1333) == (444, 1332)  # cap: round(1333 / 3)
    assert detr_output_shape(800, 1200, 800, 1333) == (800, 1200)  # already there
    g = np.random.default_rng(0)
    sizes = list(DETR_TRAIN_SIZES) + [400, 500, 600]
    checked = 0
    pairs = [(int(a), int(b)) for a, b in g.integers(1, 3000, (300, 2))]
    pairs += [(500, 500), (800, 533), (533, 800), (1, 2000), (2000, 1), (1333, 800), (667, 1000)]
    for h, w in pairs:
        for size in sizes:
            for max_size in (None, 1333):
                expected = official_get_size_with_aspect_ratio((w, h), size, max_size)
                assert detr_output_shape(h, w, size, max_size) == expected, (h, w, size, max_size)
                checked += 1
    assert checked > 5000


def test_detr_resize_uses_detr_sizes():
    np.random.seed(0)
    resize = DetrResize(DETR_TRAIN_SIZES, 1333)
    image = np.zeros((333, 517, 3), np.uint8)
    seen = set()
    for _ in range(200):
        tfm = resize.get_transform(image)
        assert (tfm.h, tfm.w) == (333, 517)
        short = min(tfm.new_h, tfm.new_w)
        assert short in ALLOWED_SHORT
        assert (tfm.new_h, tfm.new_w) == official_get_size_with_aspect_ratio(
            (517, 333), short, 1333
        )
        seen.add(short)
    assert seen == ALLOWED_SHORT  # "choice" over the 11 sizes
    # no cap: long sides beyond 1333
    tfm = DetrResize(800).get_transform(np.zeros((100, 300, 3), np.uint8))
    assert (tfm.new_h, tfm.new_w) == (800, 2400)


# ---------------------------------------------------------------------------------------------
# RandomSelect
# ---------------------------------------------------------------------------------------------
class Fixed(T.Augmentation):
    def __init__(self, tfm):
        super().__init__()
        self.tfm = tfm

    def get_transform(self, image):
        return self.tfm


def branch_types(select, n):
    aug_input = T.AugInput(np.zeros((4, 4, 3), np.uint8))
    return [tuple(type(t).__name__ for t in select(aug_input).transforms) for _ in range(n)]


@pytest.mark.parametrize("p", [0.3, 0.5, 0.8])
def test_random_select_frequency(p):
    np.random.seed(0)
    select = RandomSelect(
        Fixed(T.HFlipTransform(4)), [Fixed(T.VFlipTransform(4)), Fixed(T.NoOpTransform())], p
    )
    n = 2000
    chosen = branch_types(select, n)
    assert set(chosen) == {("HFlipTransform",), ("VFlipTransform", "NoOpTransform")}
    frequency = chosen.count(("HFlipTransform",)) / n
    assert abs(frequency - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-9  # within 4 sigma


def test_random_select_extremes_and_bad_p():
    first, second = Fixed(T.HFlipTransform(4)), Fixed(T.VFlipTransform(4))
    assert set(branch_types(RandomSelect(first, second, 1.0), 50)) == {("HFlipTransform",)}
    assert set(branch_types(RandomSelect(first, second, 0.0), 50)) == {("VFlipTransform",)}
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="not a probability"):
            RandomSelect(first, second, p)
