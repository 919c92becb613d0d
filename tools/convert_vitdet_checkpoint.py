#!/usr/bin/env python
"""Convert an official ViTDet checkpoint (.pkl/.pth, detectron2 keys) or an MAE/timm ViT
checkpoint to a plain ``{"model": state_dict}`` .pth for one of our configs, checking every key
and shape against the model the config builds.

    python tools/convert_vitdet_checkpoint.py model_final_61ccd1.pkl vitdet_b.pth
    python tools/convert_vitdet_checkpoint.py mae_pretrain_vit_base.pth mae_b.pth \
        --config-file configs/COCO/ViTDet/cascade_mask_rcnn_vitdet_b_100ep.py

The output loads with ``train.init_checkpoint=vitdet_b.pth`` (no matching heuristics needed).
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import sys

import torch
from detectron2.config import instantiate

from fpt.checkpoint import convert_to_model_state_dict, read_checkpoint, summarize_keys
from fpt.config import ConfigError, load_config

DEFAULT_CONFIG = "configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="official ViTDet .pkl/.pth, or MAE/timm ViT .pth")
    parser.add_argument("output", help="output .pth")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        raise SystemExit(f"convert_vitdet_checkpoint.py: error: {e}")
    with torch.device("meta"):  # names and shapes only
        target = instantiate(cfg.model).state_dict()
    try:
        state_dict, report = convert_to_model_state_dict(read_checkpoint(args.input), target)
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}")
    state_dict = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}
    torch.save(
        {"model": state_dict, "__author__": "fpt/tools/convert_vitdet_checkpoint.py"}, args.output
    )
    print(f"{args.output}: {len(report['loaded'])} tensors for {args.config_file}")
    if report["resized"]:
        print(f"  resized: {', '.join(report['resized'])}")
    if report["new"]:
        print(f"  not in the checkpoint ({len(report['new'])}): {summarize_keys(report['new'])}")
    if report["unused"]:
        print(f"  unused ({len(report['unused'])}): {summarize_keys(report['unused'])}")


if __name__ == "__main__":
    sys.exit(main())
