"""Small real sample sets built from files that registry packages ship.

* ``labelme_voc``: 3 PASCAL VOC photos with polygon instance masks in COCO format, from the
  ``labelme`` sdist (``examples/instance_segmentation/data_dataset_coco``). Its ``_background_``
  category (id 0) is dropped and annotation ids are renumbered from 1 (pycocotools' matching
  treats id 0 as "unmatched").
* ``deepforest_trees``: 4 aerial RGB images with tree-crown boxes (PASCAL VOC xml) from the
  ``deepforest`` wheel, converted to COCO format with one category, ``Tree``.

The package files come from ``pip download --no-deps`` into a cache folder; nothing is
installed or imported. :func:`register_samples` (run on ``import fpt``) only registers names;
``datasets/prepare_samples.py`` builds the folders.
"""

import functools
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile

from detectron2.data import DatasetCatalog

from .catalog import dataset_root, register_coco

__all__ = [
    "LABELME",
    "DEEPFOREST",
    "download",
    "prepare_labelme",
    "prepare_deepforest",
    "register_samples",
]

LABELME = "labelme==6.3.1"
DEEPFOREST = "deepforest==2.1.0"
_DEEPFOREST_IMAGES = (
    "2019_YELL_2_528000_4978000_image_crop2",
    "2019_YELL_2_541000_4977000_image_crop",
    "OSBS_029",
    "SOAP_061",
)

logger = logging.getLogger(__name__)


def download(requirement, cache, kind):
    """``pip download --no-deps`` one ``sdist`` or ``wheel`` into ``cache`` (reused if there)."""
    name = requirement.split("==")[0]
    found = glob.glob(os.path.join(cache, f"{name}-*"))
    if found:
        return found[0]
    os.makedirs(cache, exist_ok=True)
    binary = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            *binary,
            requirement,
            "-d",
            cache,
            "-q",
        ],
        check=True,
    )
    return glob.glob(os.path.join(cache, f"{name}-*"))[0]


def labelme_to_coco(coco):
    """Drop ``_background_`` and renumber annotation ids from 1 (in place; returns it)."""
    background = {c["id"] for c in coco["categories"] if c["name"] == "_background_"}
    coco["categories"] = [c for c in coco["categories"] if c["id"] not in background]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] not in background]
    for i, ann in enumerate(coco["annotations"]):
        ann["id"] = i + 1
    return coco


def prepare_labelme(root=None, cache=None):
    """Build ``<root>/labelme_voc/{annotations.json, JPEGImages/}``; returns the folder."""
    out = os.path.join(dataset_root(root), "labelme_voc")
    sdist = download(LABELME, cache or os.path.join(dataset_root(root), ".cache"), "sdist")
    prefix = "examples/instance_segmentation/data_dataset_coco/"
    os.makedirs(os.path.join(out, "JPEGImages"), exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            path = member.name.split("/", 1)[-1]
            if not path.startswith(prefix) or not member.isfile():
                continue
            rel = path[len(prefix) :]
            if rel == "annotations.json":
                coco = labelme_to_coco(json.load(tar.extractfile(member)))
                with open(os.path.join(out, "annotations.json"), "w") as f:
                    json.dump(coco, f)
            elif rel.startswith("JPEGImages/"):
                with open(os.path.join(out, rel), "wb") as f:
                    shutil.copyfileobj(tar.extractfile(member), f)
    return out


def voc_to_coco(xml_texts, file_names, category=None):
    """PASCAL VOC xml strings (one per image) -> a COCO dict: one category per object name, or
    the single ``category`` for all objects."""
    images, annotations, names = [], [], {}
    for image_id, (text, file_name) in enumerate(zip(xml_texts, file_names), 1):
        tree = ET.fromstring(text)
        size = tree.find("size")
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": int(size.find("width").text),
                "height": int(size.find("height").text),
            }
        )
        for obj in tree.iter("object"):
            name = category or obj.find("name").text
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": names.setdefault(name, len(names) + 1),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for n, i in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def prepare_deepforest(root=None, cache=None):
    """Build ``<root>/deepforest/{annotations.json, images/}``; returns the folder."""
    out = os.path.join(dataset_root(root), "deepforest")
    wheel = download(DEEPFOREST, cache or os.path.join(dataset_root(root), ".cache"), "wheel")
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    xml_texts, file_names = [], []
    with zipfile.ZipFile(wheel) as z:
        for stem in _DEEPFOREST_IMAGES:
            with (
                z.open(f"deepforest/data/{stem}.png") as src,
                open(os.path.join(out, "images", f"{stem}.png"), "wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
            xml_texts.append(z.read(f"deepforest/data/{stem}.xml").decode())
            file_names.append(f"{stem}.png")
    with open(os.path.join(out, "annotations.json"), "w") as f:
        # objects are named Tree, or Alive/Dead (tree status) in the YELL crops: all trees
        json.dump(voc_to_coco(xml_texts, file_names, category="Tree"), f)
    return out


# the deepforest_trees images held out of deepforest_trees_train (98 trees; the train split, the
# two large YELL crops, has 853)
DEEPFOREST_VAL_IMAGES = ("OSBS_029.png", "SOAP_061.png")


def register_samples(root=None):
    """Register ``labelme_voc`` and ``deepforest_trees`` (built by datasets/prepare_samples.py),
    and ``deepforest_trees`` cut by image: ``deepforest_trees_train`` and ``_val``
    (:data:`DEEPFOREST_VAL_IMAGES`), evaluated against the same json."""
    root = dataset_root(root)
    register_coco(
        "labelme_voc",
        os.path.join(root, "labelme_voc", "annotations.json"),
        os.path.join(root, "labelme_voc"),
    )
    deepforest = (
        os.path.join(root, "deepforest", "annotations.json"),
        os.path.join(root, "deepforest", "images"),
    )
    register_coco("deepforest_trees", *deepforest)
    for split, held_out in (("train", False), ("val", True)):
        name = f"deepforest_trees_{split}"
        register_coco(name, *deepforest)
        load_all = DatasetCatalog[name]
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_images_of, load_all, held_out))


def _images_of(load_all, held_out):
    """The dataset dicts that are (``held_out``) or are not in :data:`DEEPFOREST_VAL_IMAGES`."""
    return [
        d
        for d in load_all()
        if (os.path.basename(d["file_name"]) in DEEPFOREST_VAL_IMAGES) == held_out
    ]
