#!/usr/bin/env python
"""Build the small real sample sets from registry packages (needs PyPI access once).

    labelme_voc       3 PASCAL VOC photos, polygon masks   <- labelme sdist examples
    deepforest_trees  4 aerial images, 951 tree boxes      <- deepforest wheel data

Files come from ``pip download --no-deps`` into <root>/.cache; nothing is installed.
"""

import argparse

import fpt  # noqa: F401
from fpt.data.samples import prepare_deepforest, prepare_labelme

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=None, help="default: $DETECTRON2_DATASETS or datasets")
    parser.add_argument("--cache", default=None, help="download folder (default <root>/.cache)")
    parser.add_argument("--only", choices=["labelme", "deepforest"], default=None)
    args = parser.parse_args()
    if args.only in (None, "labelme"):
        print(prepare_labelme(args.root, args.cache))
    if args.only in (None, "deepforest"):
        print(prepare_deepforest(args.root, args.cache))
