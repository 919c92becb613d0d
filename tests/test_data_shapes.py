"""The synthetic shapes dataset (fpt.data.shapes): deterministic, correct annotations, lazy."""

import json
import os

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from fpt.data.shapes import SHAPES_CLASSES, generate_shapes, register_shapes

SPLITS = {"shapes_train": (0, 6), "shapes_val": (1, 3)}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    return generate_shapes(str(root), seed=5, size=96, splits=SPLITS)


def _load(folder, name):
    with open(os.path.join(folder, f"{name}.json")) as f:
        return json.load(f)


def test_same_seed_same_bytes_other_seed_other_images(small, tmp_path):
    again = generate_shapes(str(tmp_path / "a"), seed=5, size=96, splits=SPLITS)
    other = generate_shapes(str(tmp_path / "b"), seed=6, size=96, splits=SPLITS)

    def read(folder, name):
        with open(os.path.join(folder, "images", name), "rb") as f:
            return f.read()

    for name in ("shapes_train_00000.png", "shapes_val_00002.png"):
        assert read(small, name) == read(again, name)
        assert read(small, name) != read(other, name)
    assert _load(small, "shapes_train") == _load(again, "shapes_train")


def test_annotations_match_the_drawn_pixels(small):
    import cv2

    coco = _load(small, "shapes_train")
    assert len(coco["images"]) == 6
    assert [c["name"] for c in coco["categories"]] == list(SHAPES_CLASSES)
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    for ann in coco["annotations"]:
        img = coco["images"][ann["image_id"] - 1]
        image = cv2.imread(os.path.join(small, "images", img["file_name"]))
        mask = np.zeros((img["height"], img["width"]), np.uint8)
        poly = np.array(ann["segmentation"][0]).reshape(-1, 2)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        mask = mask.astype(bool)
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        # the polygon's mask lies in its box, and its area is the polygon area
        assert xs.min() >= int(x) - 1 and xs.max() <= x + w + 1
        assert ys.min() >= int(y) - 1 and ys.max() <= y + h + 1
        assert abs(mask.sum() - ann["area"]) < 0.15 * ann["area"] + 10
        # shapes are bright (>= 128 in some channel) on a dark (< 109) background
        inside = image[mask].max(axis=1).mean()
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(
            bool
        ) & ~cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert inside > 120 and image[ring].max(axis=1).mean() < 110


def test_shapes_do_not_overlap(small):
    coco = _load(small, "shapes_val")
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    for boxes in by_image.values():
        for i, (x0, y0, w0, h0) in enumerate(boxes):
            for x1, y1, w1, h1 in boxes[i + 1 :]:
                assert x0 + w0 <= x1 or x1 + w1 <= x0 or y0 + h0 <= y1 or y1 + h1 <= y0


def test_registration_is_lazy_and_generates_on_first_use(tmp_path):
    try:
        register_shapes(str(tmp_path))
        assert not os.listdir(tmp_path)  # registering wrote nothing
        meta = MetadataCatalog.get("shapes_val")
        assert meta.thing_classes == list(SHAPES_CLASSES)
        dicts = DatasetCatalog.get("shapes_val")
        assert len(dicts) == 64 and os.path.isfile(meta.json_file)
        assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0, 1, 2}
    finally:
        register_shapes()  # back to the default root


def test_changed_settings_regenerate_the_cache(tmp_path):
    folder = generate_shapes(str(tmp_path), seed=1, size=64, splits={"shapes_val": (1, 2)})
    generate_shapes(str(tmp_path), seed=1, size=80, splits={"shapes_val": (1, 2)})
    assert _load(folder, "shapes_val")["images"][0]["width"] == 80
