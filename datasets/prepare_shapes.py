#!/usr/bin/env python
"""Generate the synthetic shapes set into $DETECTRON2_DATASETS/shapes (default datasets/shapes).

Training generates it on first use anyway; run this to build it ahead (e.g. before a DDP job).
"""

import argparse

import fpt  # noqa: F401
from fpt.data.shapes import generate_shapes

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=None, help="default: $DETECTRON2_DATASETS or datasets")
    args = parser.parse_args()
    print(generate_shapes(args.root))
