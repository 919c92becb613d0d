"""LVIS-format datasets: registering any LVIS json, the federated loss's class weights, and a
tiny long-tailed LVIS-format set made from the shapes set for tests and the quick start.

The real LVIS v1 sets (``lvis_v1_train``, ``lvis_v1_val``) are detectron2's builtin
registrations (``$DETECTRON2_DATASETS/lvis/lvis_v1_{train,val}.json`` and ``coco/``'s images).

``shapes_lvis_train`` / ``shapes_lvis_val`` (registered by ``import fpt``) are the shapes images
in LVIS's format: every image lists ``neg_category_ids`` (classes verified absent) and
``not_exhaustive_category_ids``; categories carry ``frequency`` (r/c/f), ``image_count`` and
``instance_count``. The training set is federated and long-tailed: squares are annotated on
:data:`SHAPES_LVIS_COMMON` images only and triangles on :data:`SHAPES_LVIS_RARE` images only (an
image whose square or triangle is left out lists that class in neither list: unknown), so the
circle is frequent, the square common and the triangle rare, as LVIS counts them. The
validation set is annotated exhaustively.
"""

import json
import os
from collections import Counter

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import load_lvis_json

from .catalog import DatasetError, check_files, dataset_root
from .shapes import SHAPES_CLASSES, generate_shapes, shapes_root

__all__ = [
    "SHAPES_LVIS_COMMON",
    "SHAPES_LVIS_RARE",
    "fed_loss_class_weights",
    "lvis_frequency",
    "register_lvis",
    "register_shapes_lvis",
]

# training images (the first N) on which squares / triangles are annotated
SHAPES_LVIS_COMMON = 60
SHAPES_LVIS_RARE = 8
_SHAPES_LVIS = {"shapes_lvis_train": "shapes_train", "shapes_lvis_val": "shapes_val"}


def lvis_frequency(image_count):
    """LVIS's frequency group of a class annotated on ``image_count`` training images: rare
    (1-10), common (11-100), frequent (more)."""
    return "r" if image_count <= 10 else "c" if image_count <= 100 else "f"


def _load(name, json_file, image_root):
    check_files(name, json_file, image_root)
    try:
        return load_lvis_json(json_file, image_root)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise DatasetError(
            f"dataset {name!r}: {json_file!r} is not a valid LVIS json ({type(e).__name__}: {e})"
        ) from None


def register_lvis(name, json_file, image_root):
    """Register an LVIS-format json under any name (detectron2's ``register_lvis_instances``
    knows the metadata of the builtin names only). Category ids must be 1..K; the class names,
    per-class image counts (``class_image_count``, for the federated loss) and the LVIS
    evaluator type are set now. Images are found as detectron2's LVIS loader finds them:
    ``image_root + <folder>/<file>`` of each image's ``coco_url`` ``.../<folder>/<file>``."""
    check_files(name, json_file, image_root)
    with open(json_file) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    if [c["id"] for c in categories] != list(range(1, len(categories) + 1)):
        raise DatasetError(f"dataset {name!r}: {json_file!r}: category ids are not 1..K")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _load(name, json_file, image_root))
    MetadataCatalog.get(name).set(
        thing_classes=[c["name"] for c in categories],
        class_image_count=[{"id": c["id"], "image_count": c["image_count"]} for c in categories],
        json_file=json_file,
        image_root=image_root,
        evaluator_type="lvis",
    )


def fed_loss_class_weights(dataset_names, power=0.5):
    """The federated loss's class weights, ``image_count ** power`` per class (in contiguous
    class order): from the first dataset's ``class_image_count`` metadata (set by
    :func:`register_lvis` and by detectron2 main for ``lvis_v1_*``), else counted over the
    datasets' images (detectron2 0.6's ``lvis_v1_train`` has no such metadata: the images that
    hold each class are counted once, at the first training step)."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    counts = MetadataCatalog.get(names[0]).get("class_image_count")
    if counts is not None:
        image_count = [c["image_count"] for c in sorted(counts, key=lambda c: c["id"])]
    else:
        num_classes = len(MetadataCatalog.get(names[0]).thing_classes)
        per_class = Counter(
            c
            for name in names
            for d in DatasetCatalog.get(name)
            for c in {a["category_id"] for a in d["annotations"]}
        )
        image_count = [per_class[c] for c in range(num_classes)]
    return torch.tensor(image_count, dtype=torch.float32) ** power


def _shapes_lvis_split(coco, train):
    """The images and annotations of the LVIS-format version of a shapes COCO json (see the
    module's docstring)."""
    circle, square, triangle = (
        SHAPES_CLASSES.index(c) + 1 for c in ("circle", "square", "triangle")
    )
    annotated_on = {circle: None, square: SHAPES_LVIS_COMMON, triangle: SHAPES_LVIS_RARE}
    order = {img["id"]: i for i, img in enumerate(coco["images"])}

    def annotated(category_id, image_id):
        first = annotated_on[category_id]
        return not train or first is None or order[image_id] < first

    present = {img["id"]: set() for img in coco["images"]}
    for a in coco["annotations"]:
        present[a["image_id"]].add(a["category_id"])
    images = [
        {
            **img,
            # detectron2's LVIS loader reads <image_root><folder>/<file> from the url
            "coco_url": f"file:///shapes/images/{img['file_name']}",
            "neg_category_ids": [
                c for c in annotated_on if c not in present[img["id"]] and annotated(c, img["id"])
            ],
            "not_exhaustive_category_ids": [],
        }
        for img in coco["images"]
    ]
    annotations = [a for a in coco["annotations"] if annotated(a["category_id"], a["image_id"])]
    return images, annotations


def _write_shapes_lvis(root):
    """Write ``shapes_lvis_{train,val}.json`` next to the shapes set (if missing) and return
    the folder; the categories' counts and frequencies are the training set's in both."""
    folder = generate_shapes(root)
    paths = {name: os.path.join(folder, f"{name}.json") for name in _SHAPES_LVIS}
    if all(os.path.isfile(p) for p in paths.values()):
        return folder
    splits = {}
    for name, source in _SHAPES_LVIS.items():
        with open(os.path.join(folder, f"{source}.json")) as f:
            splits[name] = _shapes_lvis_split(json.load(f), train=name == "shapes_lvis_train")
    train_annotations = splits["shapes_lvis_train"][1]
    image_count = Counter(
        c for _, c in {(a["image_id"], a["category_id"]) for a in train_annotations}
    )
    instance_count = Counter(a["category_id"] for a in train_annotations)
    categories = [
        {
            "id": i,
            "name": name,
            "synonyms": [name],
            "frequency": lvis_frequency(image_count[i]),
            "image_count": image_count[i],
            "instance_count": instance_count[i],
        }
        for i, name in enumerate(SHAPES_CLASSES, start=1)
    ]
    for name, (images, annotations) in splits.items():
        tmp = f"{paths[name]}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        os.replace(tmp, paths[name])
    return folder


def register_shapes_lvis(root=None):
    """Register ``shapes_lvis_train``/``shapes_lvis_val`` (written on first use, next to the
    shapes set) as LVIS datasets. Their ``class_image_count`` is not set (it is known once
    the json is written): the federated loss counts the training images instead, the same
    numbers."""
    root = dataset_root(root)
    folder = shapes_root(root)
    for name in _SHAPES_LVIS:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name,
            lambda name=name: load_lvis_json(
                os.path.join(_write_shapes_lvis(root), f"{name}.json"), folder + os.sep
            ),
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_colors=MetadataCatalog.get(_SHAPES_LVIS[name]).thing_colors,
            json_file=os.path.join(folder, f"{name}.json"),
            image_root=folder + os.sep,
            evaluator_type="lvis",
        )
