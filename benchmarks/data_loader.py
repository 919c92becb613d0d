#!/usr/bin/env python
"""Images per second of a LazyConfig's training data path, piece by piece: decoding alone, the
config's mapper in this process (decode + augment + annotations), and the config's training
loader with 0, 2, 4... worker processes (what the model step waits on).

    # ViTDet's LSJ mapper and loader on the labelme VOC sample photos (datasets/prepare_samples.py)
    python benchmarks/data_loader.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py
    # the same with upstream's two LSJ augmentations (ResizeScale + FixedSizeCrop) instead of ours
    python benchmarks/data_loader.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py \\
        --upstream-lsj
    # DETR's mapper (multi-scale resize, random size crop), FPT's (multi-scale shortest edge)
    python benchmarks/data_loader.py --config-file configs/COCO/DETR/detr_r50_500ep.py
    python benchmarks/data_loader.py --config-file configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py

The dataset is ``--dataset`` (any registered COCO-format set; default the labelme VOC photos,
500x375 with polygon masks, COCO-like) in place of the config's. Images/s: the mean over
``--images`` images after ``--warmup`` (for loaders: after the first batch, which pays the
worker start-up, reported apart). Torch runs one thread per process, as in a loader worker.
Prints a table and a ``RESULT {json}`` line.
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import copy
import itertools
import json
import sys
import time

import numpy as np
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
import detectron2.data.transforms as T

from fpt.config import load_config
from fpt.data.images import read_image
from fpt.data.transforms import ResizeScaleCrop


def upstream_lsj(augmentations):
    """The augmentations with each ``ResizeScaleCrop`` as upstream's ``ResizeScale`` +
    ``FixedSizeCrop``."""
    out = []
    for aug in augmentations:
        if aug._target_ is not ResizeScaleCrop:
            out.append(aug)
            continue
        size = dict(target_height=aug.target_height, target_width=aug.target_width)
        out.append(L(T.ResizeScale)(min_scale=aug.min_scale, max_scale=aug.max_scale, **size))
        crop = aug.get("crop_size") or tuple(size.values())
        out.append(L(T.FixedSizeCrop)(crop_size=crop, pad=aug.get("pad", True)))
    return out


def rate(fn, items, warmup):
    """Calls ``fn`` on each item; images per second after ``warmup`` of them."""
    for item in items[:warmup]:
        fn(item)
    start = time.perf_counter()
    for item in items[warmup:]:
        fn(item)
    return (len(items) - warmup) / (time.perf_counter() - start)


def loader_rate(cfg, workers, images):
    """(images/s after the first batch, seconds to the first batch) of the config's loader."""
    node = copy.deepcopy(cfg.dataloader.train)
    node.num_workers = workers
    batch = node.total_batch_size
    start = time.perf_counter()
    loader = iter(instantiate(node))
    next(loader)
    first = time.perf_counter() - start
    batches = max(1, images // batch)
    start = time.perf_counter()
    for _ in itertools.islice(loader, batches):
        pass
    return batches * batch / (time.perf_counter() - start), first


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="a LazyConfig .py")
    parser.add_argument("--dataset", default="labelme_voc", help="a registered training set")
    parser.add_argument("--images", type=int, default=48, help="images per measurement")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--batch", type=int, default=2, help="the loader's total batch size")
    parser.add_argument(
        "--upstream-lsj", action="store_true", help="ResizeScale + FixedSizeCrop, as upstream"
    )
    parser.add_argument("opts", nargs="*", help="config overrides KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    cfg = load_config(args.config_file, args.opts)
    train = cfg.dataloader.train
    train.dataset.names = args.dataset
    train.total_batch_size = args.batch
    if args.upstream_lsj:
        train.mapper.augmentations = upstream_lsj(train.mapper.augmentations)
    dicts = DatasetCatalog.get(args.dataset)
    items = [dicts[i % len(dicts)] for i in range(args.images + args.warmup)]
    mapper = instantiate(train.mapper)
    image_format = train.mapper.get("image_format", "BGR")
    np.random.seed(0)

    result = {
        "config": args.config_file,
        "dataset": args.dataset,
        "upstream_lsj": args.upstream_lsj,
        "augmentations": [type(a).__name__ for a in mapper.augmentations.augs],
        "decode_images_per_s": rate(
            lambda d: read_image(d["file_name"], image_format), items, args.warmup
        ),
        "mapper_images_per_s": rate(lambda d: mapper(copy.deepcopy(d)), items, args.warmup),
    }
    for workers in args.workers:
        per_s, first = loader_rate(cfg, workers, args.images)
        result[f"loader_{workers}_workers_images_per_s"] = per_s
        result[f"loader_{workers}_workers_first_batch_s"] = first

    print(f"{args.config_file} on {args.dataset} ({', '.join(result['augmentations'])}):")
    print(f"  {'decode only':<28}{result['decode_images_per_s']:8.1f} images/s")
    print(f"  {'mapper (1 process)':<28}{result['mapper_images_per_s']:8.1f} images/s")
    for workers in args.workers:
        label = f"loader, {workers} workers"
        print(
            f"  {label:<28}{result[f'loader_{workers}_workers_images_per_s']:8.1f} images/s "
            f"(first batch after {result[f'loader_{workers}_workers_first_batch_s']:.1f} s)"
        )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
