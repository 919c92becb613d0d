"""Bad dataset paths, missing and corrupt images: one clear error (or a skip in training)."""

import logging
import os
import shutil

import pytest

from detectron2.data import DatasetCatalog

from fpt.data import (
    DatasetError,
    ImageReadError,
    RobustDatasetMapper,
    check_registered,
    generate_shapes,
    register_coco,
)


@pytest.fixture
def coco_copy(tmp_path):
    """A 3-image COCO dataset (copied from a small shapes set) that tests may break."""
    folder = generate_shapes(str(tmp_path / "src"), seed=2, size=64, splits={"shapes_val": (1, 3)})
    images = tmp_path / "images"
    shutil.copytree(os.path.join(folder, "images"), images)
    json_file = tmp_path / "val.json"
    shutil.copy(os.path.join(folder, "shapes_val.json"), json_file)
    return str(json_file), str(images)


def _mapper(is_train):
    return RobustDatasetMapper(
        is_train=is_train, augmentations=[], image_format="BGR", use_instance_mask=True
    )


def test_registered_coco_json_loads(coco_copy):
    register_coco("t_ok", *coco_copy)
    assert len(DatasetCatalog.get("t_ok")) == 3
    check_registered(["t_ok"])


@pytest.mark.parametrize(
    "broken, message",
    [
        ("json", "annotation file '.*nope.json' does not exist"),
        ("root", "image folder '.*nope' does not exist"),
    ],
)
def test_bad_paths_give_one_line(coco_copy, broken, message):
    json_file, root = coco_copy
    if broken == "json":
        json_file = json_file.replace("val.json", "nope.json")
    else:
        root = root.replace("images", "nope")
    register_coco("t_bad", json_file, root)
    for check in (lambda: check_registered("t_bad"), lambda: DatasetCatalog.get("t_bad")):
        with pytest.raises(DatasetError, match=message) as e:
            check()
        assert "\n" not in str(e.value) and "'t_bad'" in str(e.value)


def test_unregistered_name_suggests_close_names():
    with pytest.raises(DatasetError, match="not registered; did you mean: shapes_val"):
        check_registered("shapes_vall")


def test_builtin_coco_without_files_is_one_line():
    with pytest.raises(DatasetError, match="coco_2017_val.*does not exist"):
        check_registered("coco_2017_val")


def test_missing_image_is_one_line(coco_copy):
    json_file, root = coco_copy
    os.remove(os.path.join(root, "shapes_val_00001.png"))
    register_coco("t_missing", json_file, root)
    with pytest.raises(DatasetError, match=r"1 of 3 images are missing, first: .*00001.png"):
        DatasetCatalog.get("t_missing")


def test_invalid_json_is_one_line(coco_copy):
    json_file, root = coco_copy
    with open(json_file, "w") as f:
        f.write("{not json")
    register_coco("t_json", json_file, root)
    with pytest.raises(DatasetError, match="is not a valid COCO json"):
        DatasetCatalog.get("t_json")


def test_corrupt_image_is_skipped_in_training_and_an_error_in_testing(coco_copy, caplog):
    json_file, root = coco_copy
    register_coco("t_corrupt", json_file, root)
    dicts = DatasetCatalog.get("t_corrupt")
    with open(dicts[0]["file_name"], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(50))  # a truncated PNG
    ok = _mapper(True)(dict(dicts[1]))
    assert ok["image"].shape == (3, 64, 64) and len(ok["instances"]) >= 1
    with caplog.at_level(logging.WARNING, logger="fpt.data.mapper"):
        assert _mapper(True)(dict(dicts[0])) is None
    assert "Skipping a training image" in caplog.text and "00000.png" in caplog.text
    with pytest.raises(ImageReadError, match="cannot read image .*00000.png"):
        _mapper(False)(dict(dicts[0]))


def test_missing_image_during_mapping_is_an_error_even_in_training(coco_copy):
    json_file, root = coco_copy
    register_coco("t_gone", json_file, root)
    d = dict(DatasetCatalog.get("t_gone")[2])
    os.remove(d["file_name"])
    with pytest.raises(ImageReadError, match="does not exist"):
        _mapper(True)(d)
