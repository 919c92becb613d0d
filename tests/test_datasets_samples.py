"""Sample-set conversions (fpt.data.samples), offline: labelme COCO and deepforest VOC xml."""

import json
import os

import pytest

from fpt.data.catalog import dataset_root
from fpt.data.samples import labelme_to_coco, voc_to_coco

VOC = """<annotation><size><width>40</width><height>30</height><depth>3</depth></size>
<object><name>Alive</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>7</ymax>
</bndbox></object><object><name>Dead</name><bndbox><xmin>20</xmin><ymin>5</ymin><xmax>30</xmax>
<ymax>25</ymax></bndbox></object></annotation>"""


def test_labelme_background_dropped_and_ids_from_one():
    coco = {
        "categories": [
            {"id": 0, "name": "_background_"},
            {"id": 1, "name": "person"},
            {"id": 2, "name": "dog"},
        ],
        "images": [{"id": 0, "file_name": "JPEGImages/a.jpg", "height": 5, "width": 5}],
        "annotations": [
            {"id": 0, "category_id": 1, "image_id": 0},
            {"id": 1, "category_id": 0, "image_id": 0},
            {"id": 2, "category_id": 2, "image_id": 0},
        ],
    }
    out = labelme_to_coco(coco)
    assert [c["name"] for c in out["categories"]] == ["person", "dog"]
    assert [(a["id"], a["category_id"]) for a in out["annotations"]] == [(1, 1), (2, 2)]


def test_voc_xml_to_coco_boxes():
    coco = voc_to_coco([VOC, VOC], ["a.png", "b.png"])
    assert [c["name"] for c in coco["categories"]] == ["Alive", "Dead"]
    assert coco["images"][1] == {"id": 2, "file_name": "b.png", "width": 40, "height": 30}
    assert coco["annotations"][1]["bbox"] == [20.0, 5.0, 10.0, 20.0]
    assert coco["annotations"][1]["area"] == 200.0
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4]
    single = voc_to_coco([VOC], ["a.png"], category="Tree")
    assert single["categories"] == [{"id": 1, "name": "Tree"}]
    assert {a["category_id"] for a in single["annotations"]} == {1}


def _prepared(name):
    """A sample set built by tools/setup.sh (datasets/prepare_samples.py)."""
    path = os.path.join(dataset_root(None), name, "annotations.json")
    assert os.path.isfile(
        path
    ), f"{path} missing: run datasets/prepare_samples.py (tools/setup.sh does)"
    with open(path) as f:
        return json.load(f)


def test_prepared_deepforest_has_951_trees():
    coco = _prepared("deepforest")
    assert len(coco["images"]) == 4 and len(coco["annotations"]) == 951
    assert coco["categories"] == [{"id": 1, "name": "Tree"}]


def test_prepared_labelme_voc_photos():
    coco = _prepared("labelme_voc")
    assert len(coco["images"]) == 3
    assert "_background_" not in {c["name"] for c in coco["categories"]}
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) > 0
    assert all(a["segmentation"] and len(a["segmentation"][0]) >= 6 for a in coco["annotations"])


@pytest.mark.parametrize("name", ["labelme_voc", "deepforest_trees"])
def test_prepared_sets_load_through_the_catalog(name):
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get(name)
    assert dicts and all(os.path.isfile(d["file_name"]) for d in dicts)
    assert all(d["annotations"] for d in dicts)
