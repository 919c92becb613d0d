#!/usr/bin/env python
"""Print the parameters and fvcore FLOPs of a model, in total and per top-level module.

    python tools/analyze_model.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py
    python tools/analyze_model.py --config-file CFG.py --height 800 --width 1333 \
        model.backbone.net.depth=6

LazyConfig (.py) files take ``key=value`` overrides; yacs (.yaml) files take ``KEY VALUE`` pairs.
The model is randomly initialised and run on one random image, with no detections (see
``fpt.utils.analysis``).
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import logging
import sys

from fpt.config import ConfigError, RunConfig, load_config
from fpt.utils.analysis import analyze_model, format_complexity_table


def build_from_config(path, opts):
    """The model of a LazyConfig .py or yacs .yaml file (overrides checked), on CPU."""
    try:
        cfg = load_config(path, opts)
    except ConfigError as e:
        raise SystemExit(f"analyze_model.py: error: {e}")
    return RunConfig(cfg).build_model("cpu")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = build_from_config(args.config_file, args.opts)
    result = analyze_model(model, args.height, args.width)
    print(f"{args.config_file} on a {args.height}x{args.width} image:")
    print(format_complexity_table(result))
    if result["unsupported_ops"]:
        ops = ", ".join(f"{k} ({v})" for k, v in sorted(result["unsupported_ops"].items()))
        print(f"not counted (element-wise or unsupported): {ops}")


if __name__ == "__main__":
    sys.exit(main())
