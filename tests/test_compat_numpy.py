"""fpt.compat.numpy_aliases is scoped to the detectron2 modules that use the removed aliases;
numpy itself is left alone. (fpt.compat.tensor_array is the one process-wide numpy-related
patch: see its docstring.)"""

import numpy as np
import pytest
import torch
from PIL import Image

import fpt  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog


def test_numpy_itself_is_left_alone():
    assert "int" not in np.__dict__ and "float" not in np.__dict__
    with pytest.raises(AttributeError):
        np.float  # noqa: B018  (numpy 2's own error, in the user's code)


def test_sem_seg_evaluator_uses_its_aliases(tmp_path):
    """evaluation/sem_seg_evaluation.py: np.int and np.float (AttributeError on numpy 2)."""
    from detectron2.evaluation import SemSegEvaluator

    gt = np.zeros((6, 8), np.uint8)
    gt[:, 4:] = 1
    gt[0, 0] = 255  # ignored
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = "compat_numpy_semseg"
    DatasetCatalog.register(
        name, lambda: [{"file_name": "img.jpg", "sem_seg_file_name": str(tmp_path / "gt.png")}]
    )
    MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255)
    try:
        evaluator = SemSegEvaluator(name, distributed=False)
        evaluator.reset()
        logits = torch.zeros(2, 6, 8)
        logits[1, :, 2:] = 1.0  # predicts class 1 from column 2: columns 2-3 wrong
        evaluator.process([{"file_name": "img.jpg"}], [{"sem_seg": logits}])
        result = evaluator.evaluate()["sem_seg"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert result["IoU-a"] == pytest.approx(100 * 11 / 23)  # 23 counted, 12 predicted as b
    assert result["IoU-b"] == pytest.approx(100 * 24 / 36)


def test_pascal_voc_loader_uses_its_alias(tmp_path):
    """data/datasets/pascal_voc.py: np.loadtxt(..., dtype=np.str)."""
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("000001\n000002\n")
    for i, name in enumerate(["000001", "000002"]):
        (tmp_path / "Annotations" / f"{name}.xml").write_text(
            "<annotation><size><width>40</width><height>30</height></size><object><name>"
            f"{['cat', 'dog'][i]}</name><difficult>0</difficult><bndbox><xmin>2</xmin>"
            "<ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object></annotation>"
        )
    records = load_voc_instances(str(tmp_path), "val", ["dog", "cat"])
    assert [r["image_id"] for r in records] == ["000001", "000002"]
    assert [r["annotations"][0]["category_id"] for r in records] == [1, 0]
