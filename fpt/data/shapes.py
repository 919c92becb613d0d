"""A deterministic synthetic instance-segmentation dataset: circles, squares and triangles.

Every image is drawn from ``numpy.random.default_rng((seed, split_id, index))``, so the same
seed gives byte-identical images and annotations on every machine. Shapes do not overlap, so
each instance's polygon is its exact visible mask.

The images and a COCO-format json per split are written once, on first use, into
``<root>/shapes/`` (root: ``$DETECTRON2_DATASETS``, default ``datasets``). A ``meta.json`` there
records the generator settings; a cache made with other settings is regenerated. In a
distributed run only local rank 0 of each machine generates; the other ranks wait for it.

``import fpt`` registers ``shapes_train`` and ``shapes_val`` (cheap: nothing is generated until
``DatasetCatalog.get`` is called).
"""

import json
import logging
import os
import shutil
import tempfile
import time

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from detectron2.utils import comm

from .catalog import DatasetError, dataset_root

__all__ = ["SHAPES_CLASSES", "SHAPES_SPLITS", "generate_shapes", "register_shapes", "shapes_root"]

SHAPES_CLASSES = ("circle", "square", "triangle")
# name -> (split id used in the seed, number of images)
SHAPES_SPLITS = {"shapes_train": (0, 256), "shapes_val": (1, 64)}
_VERSION = 1  # bump when the drawing code changes, so caches regenerate

logger = logging.getLogger(__name__)


def shapes_root(root=None):
    """The cache folder: ``<root or $DETECTRON2_DATASETS or 'datasets'>/shapes``."""
    return os.path.join(dataset_root(root), "shapes")


def _polygon(kind, cx, cy, r, angle):
    """Vertices (N, 2) float of a shape of circumradius ``r`` centred at (cx, cy)."""
    n = {"circle": 32, "square": 4, "triangle": 3}[kind]
    t = angle + np.arange(n) * (2 * np.pi / n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _draw_image(rng, size, max_instances):
    """Returns a (size, size, 3) uint8 BGR image and a list of (category_id, polygon) pairs."""
    background = rng.integers(0, 96, size=3)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    noise = rng.integers(-12, 13, size=(size, size, 1))
    image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    instances, boxes = [], []
    for _ in range(int(rng.integers(1, max_instances + 1))):
        for _attempt in range(20):  # rejection sampling of a free place
            kind = int(rng.integers(len(SHAPES_CLASSES)))
            r = rng.uniform(0.08, 0.2) * size
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            poly = _polygon(SHAPES_CLASSES[kind], cx, cy, r, rng.uniform(0, 2 * np.pi))
            x0, y0 = poly.min(0) - 2
            x1, y1 = poly.max(0) + 2
            if all(x0 > b[2] or x1 < b[0] or y0 > b[3] or y1 < b[1] for b in boxes):
                boxes.append((x0, y0, x1, y1))
                color = [int(c) for c in rng.integers(128, 256, size=3)]
                cv2.fillPoly(image, [np.round(poly).astype(np.int32)], color, lineType=cv2.LINE_AA)
                instances.append((kind + 1, poly))
                break
    return image, instances


def _coco_split(name, split_id, num_images, seed, size, max_instances, image_dir):
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng((seed, split_id, index))
        image, instances = _draw_image(rng, size, max_instances)
        file_name = f"{name}_{index:05d}.png"
        cv2.imwrite(os.path.join(image_dir, file_name), image)
        images.append({"id": index + 1, "file_name": file_name, "height": size, "width": size})
        for category_id, poly in instances:
            x0, y0 = np.clip(poly.min(0), 0, size)
            x1, y1 = np.clip(poly.max(0), 0, size)
            x, y = poly[:, 0], poly[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category_id,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float(area),
                    "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(SHAPES_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _local_rank():
    """This process's rank on its machine: 0 outside a distributed run."""
    try:
        return comm.get_local_rank()
    except AssertionError:  # a process group set up without detectron2's local group
        return int(os.environ.get("LOCAL_RANK", comm.get_rank()))


def _is_current(meta_file, meta):
    if not os.path.isfile(meta_file):
        return False
    with open(meta_file) as f:
        return json.load(f) == meta


def _wait_for(folder, meta_file, meta, timeout):
    """Wait (no collective: any caller may) until local rank 0 has generated ``folder``."""
    logger.info("Waiting for local rank 0 to generate the shapes dataset in %s", folder)
    deadline = time.monotonic() + timeout
    while not _is_current(meta_file, meta):
        if time.monotonic() > deadline:
            raise DatasetError(
                f"shapes dataset: local rank 0 did not generate {folder} within {timeout:g} s"
            )
        time.sleep(0.2)
    return folder


def generate_shapes(root=None, seed=0, size=128, max_instances=4, splits=None, timeout=600):
    """Generate (if missing or stale) the shapes images and COCO jsons; return the folder.

    Layout: ``<folder>/images/*.png``, ``<folder>/<split>.json``, ``<folder>/meta.json``.
    In a distributed run, local rank 0 generates and the other ranks of its machine wait for it
    (up to ``timeout`` seconds). The folder is written to a temporary sibling and renamed into
    place, so other processes and interrupted runs never see a half-written dataset.
    """
    folder = shapes_root(root)
    splits = splits or SHAPES_SPLITS
    meta = {
        "version": _VERSION,
        "seed": seed,
        "size": size,
        "max_instances": max_instances,
        "splits": {k: list(v) for k, v in splits.items()},
    }
    meta_file = os.path.join(folder, "meta.json")
    if _is_current(meta_file, meta):
        return folder
    if _local_rank() != 0:
        return _wait_for(folder, meta_file, meta, timeout)
    if os.path.isfile(meta_file):
        logger.info("Regenerating %s: it was made with other settings.", folder)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".shapes-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "images"))
        for name, (split_id, num_images) in splits.items():
            coco = _coco_split(
                name, split_id, num_images, seed, size, max_instances, os.path.join(tmp, "images")
            )
            with open(os.path.join(tmp, f"{name}.json"), "w") as f:
                json.dump(coco, f)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f)
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Generated the shapes dataset in %s", folder)
    return folder


def _load(name, root):
    folder = generate_shapes(root)
    return load_coco_json(
        os.path.join(folder, f"{name}.json"), os.path.join(folder, "images"), name
    )


def register_shapes(root=None):
    """Register ``shapes_train``/``shapes_val`` (lazily generated) with their metadata.

    ``root`` (default: ``$DETECTRON2_DATASETS`` or ``datasets``, read now) holds ``shapes/``.
    """
    root = dataset_root(root)
    folder = shapes_root(root)
    for name in SHAPES_SPLITS:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda name=name: _load(name, root))
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_colors=[(220, 20, 60), (0, 130, 230), (30, 170, 60)],
            # category ids 1..3 of the json (set now: the json is written on first use)
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
            json_file=os.path.join(folder, f"{name}.json"),
            image_root=os.path.join(folder, "images"),
            evaluator_type="coco",
        )
