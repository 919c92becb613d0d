"""Registering COCO-format datasets, and checking datasets before training starts.

Bad paths otherwise surface late and deep: a missing json inside ``load_coco_json``, an
unregistered name as a ``KeyError`` listing hundreds of names, a missing image inside a
data-loader worker. These checks turn each into one :class:`DatasetError` line naming the
dataset, the path and what was expected.
"""

import difflib
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json


def dataset_root(root=None):
    """Where datasets live: ``root``, else ``$DETECTRON2_DATASETS``, else ``datasets`` (as in
    detectron2's builtin datasets)."""
    return os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))


__all__ = [
    "DatasetError",
    "register_coco",
    "check_registered",
    "check_files",
    "check_image_files",
    "dataset_classes",
]


class DatasetError(ValueError):
    """A dataset is not registered, or its files are missing (message: one line)."""


def check_files(name, json_file=None, image_root=None):
    """Raise :class:`DatasetError` when the annotation file or image folder is missing."""
    if json_file is not None and not os.path.isfile(json_file):
        raise DatasetError(
            f"dataset {name!r}: annotation file {json_file!r} does not exist "
            "(see datasets/README.md for the expected layout)"
        )
    if image_root is not None and not os.path.isdir(image_root):
        raise DatasetError(
            f"dataset {name!r}: image folder {image_root!r} does not exist "
            "(see datasets/README.md for the expected layout)"
        )


def check_registered(names):
    """Raise :class:`DatasetError` for a name that is not registered (with close names), or a
    registered COCO-style dataset whose json/image folder is missing."""
    names = [names] if isinstance(names, str) else list(names)
    known = DatasetCatalog.list()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            raise DatasetError(
                f"dataset {name!r} is not registered{hint} "
                "(register a COCO json with --register-coco NAME JSON IMAGES)"
            )
        meta = MetadataCatalog.get(name)
        if name.startswith("shapes_"):
            continue  # generated on first use
        check_files(name, meta.get("json_file"), meta.get("image_root"))


def check_image_files(dicts, name="dataset"):
    """Raise :class:`DatasetError` naming the first of ``dicts``' images that is missing."""
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise DatasetError(
            f"{name}: {len(missing)} of {len(dicts)} images are missing, first: " f"{missing[0]!r}"
        )


def _load_checked(name, json_file, image_root):
    check_files(name, json_file, image_root)
    try:
        dicts = load_coco_json(json_file, image_root, name)
    except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(
            f"dataset {name!r}: {json_file!r} is not a valid COCO json "
            f"({type(e).__name__}: {e})"
        ) from None
    check_image_files(dicts, f"dataset {name!r}")
    return dicts


def register_coco(name, json_file, image_root, **metadata):
    """Register a COCO-format instances json (like detectron2's ``register_coco_instances``)
    whose loading checks the paths and the image files; re-registering replaces the entry."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: _load_checked(name, json_file, image_root))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )


def dataset_classes(name):
    """The class names (``thing_classes``) of a registered dataset, or None when unknown.

    Taken from its metadata; for a COCO json whose data was not loaded yet (``register_coco``
    reads it lazily), from the json's ``categories`` (sorted by id, as ``load_coco_json`` orders
    them), which are then set in the metadata with the category-id map, as ``load_coco_json``
    sets them. None when the metadata names neither (or the json does not exist).
    """
    meta = MetadataCatalog.get(name)
    if "thing_classes" in meta.as_dict():
        return list(meta.thing_classes)
    json_file = meta.get("json_file")
    if not json_file or not os.path.isfile(json_file):
        return None
    try:
        with open(json_file) as f:
            categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
        names = [c["name"] for c in categories]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"dataset {name!r}: {json_file!r} has no valid COCO categories "
            f"({type(e).__name__}: {e})"
        ) from None
    meta.thing_classes = names
    meta.thing_dataset_id_to_contiguous_id = {c["id"]: i for i, c in enumerate(categories)}
    return names
