#!/usr/bin/env python
"""Parameters and FLOPs of Mask R-CNN R-50 with BFP, +ST, +GT, +RT and full FPT, next to the
paper's Table (Zhang et al., ECCV 2020).

    python benchmarks/fpt_cost_table.py                       # 800x1333, as in the paper
    python benchmarks/fpt_cost_table.py --height 320 --width 512 --rows BFP FPT   # quick look

Models come from ``configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py`` with transformers switched off;
counts from ``fpt.utils.analysis.analyze_model`` (fvcore, one fused multiply-add = one flop; an
``aten::scaled_dot_product_attention`` call counts its two matmuls). FLOPs of one image, eval
mode, no detections (backbone + RPN + box head on 1000 proposals). On CPU the full model at
800x1333 takes minutes: its global attention at P2 is real work (67,200 x 67,200 per part).

"attention GFLOPs" are the attention matmuls inside that count (as executed: q/k/v zero-padded
to one width for the fused kernel; in brackets: as the formula needs them); "w/o attention" is
the rest (convolutions and linear layers), which is what the paper's numbers track.
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import json
import logging
import math
import os
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from tqdm import tqdm

from fpt.utils.analysis import analyze_model

CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py",
)
# row: (self, grounding, rendering), paper params (M), paper GFLOPs, paper box / mask AP
ROWS = {
    "BFP": ((False, False, False), 34.6, 172.3, "31.6 / 29.9"),
    "+ST": ((True, False, False), 55.0, 248.2, "32.0 / 30.6"),
    "+GT": ((False, True, False), 63.9, 265.1, "35.1 / 33.9"),
    "+RT": ((False, False, True), 39.8, 187.9, "34.7 / 33.1"),
    "FPT": ((True, True, True), 88.2, 346.2, "38.0 / 36.8"),
}


def attention_flops(neck, height, width):
    """
    Multiply-adds of FPT's attention matmuls on a ``height x width`` image (padded to 32), as
    fvcore counts the executed ``scaled_dot_product_attention`` calls (q/k/v zero-padded to one
    width) and as the formula needs them (N L S (d + Cv), d = C/N, +1 for "euclidean").
    Returns (executed, formula).
    """
    size = {
        f"p{l}": (math.ceil(height / 32) * 2 ** (5 - l), math.ceil(width / 32) * 2 ** (5 - l))
        for l in range(2, 6)
    }

    def one(attention, queries, keys):
        parts = 1 if attention.mixture is None else attention.mixture.proj.out_features
        d = attention.query.out_channels // parts + (attention.similarity == "euclidean")
        cv = attention.value.out_channels
        width_ = 8 * math.ceil(max(d, cv) / 8)
        return parts * queries * keys * 2 * width_, parts * queries * keys * (d + cv)

    def area(level, pool=1):
        h, w = size[level]
        return math.ceil(h / pool) * math.ceil(w / pool)

    total = [0, 0]
    for level, st in neck.self_transformers.items():
        a = st.attention
        for i, x in enumerate(one(a, area(level), area(level, a.kv_pool))):
            total[i] += x
    for name, gt in neck.grounding_transformers.items():
        coarse, fine = name.split("_to_")
        a = gt.attention
        keys = area(coarse, a.kv_pool) if gt.mode == "global" else gt.window**2
        queries = area(fine) if gt.mode == "global" else area(coarse) * gt.ratio**2
        for i, x in enumerate(one(a, queries, keys)):
            total[i] += x
    return tuple(total)


def measure(row, height, width, overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), overrides)
    st, gt, rt = ROWS[row][0]
    cfg.model.backbone.update(
        self_transformer=st, grounding_transformer=gt, rendering_transformer=rt
    )
    model = instantiate(cfg.model)
    result = analyze_model(model, height, width)
    neck = sum(p.numel() for n, p in model.backbone.named_parameters() if "bottom_up" not in n)
    executed, formula = attention_flops(model.backbone, height, width)
    return {
        "params": result["params"]["total"],
        "neck_params": neck,
        "flops": result["flops"]["total"],
        "backbone_flops": result["flops"]["backbone"],
        "attention_flops": executed,
        "attention_flops_formula": formula,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--json", metavar="FILE", help="also write the measurements here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    results = {}
    for row in tqdm(args.rows, desc="counting", unit="model"):
        results[row] = measure(row, args.height, args.width, args.opts)
        tqdm.write(f"{row}: {json.dumps(results[row])}")
    base = results.get("BFP")
    print(f"\nMask R-CNN R-50 on a {args.height}x{args.width} image (fvcore; paper: 800x1333)")
    header = (
        "| model | params (M) | neck params (M) | GFLOPs | attention GFLOPs (formula) "
        "| GFLOPs w/o attention | paper params (M) | paper GFLOPs | GFLOPs / BFP "
        "| w/o attention / BFP | paper / BFP | paper AP |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row, r in results.items():
        _, p_params, p_flops, p_ap = ROWS[row]
        other = r["flops"] - r["attention_flops"]
        ratio = f"{r['flops'] / base['flops']:.2f}" if base else "-"
        other_ratio = f"{other / base['flops']:.2f}" if base else "-"
        print(
            f"| {row} | {r['params'] / 1e6:.1f} | {r['neck_params'] / 1e6:.1f} "
            f"| {r['flops'] / 1e9:.1f} | {r['attention_flops'] / 1e9:.1f} "
            f"({r['attention_flops_formula'] / 1e9:.1f}) | {other / 1e9:.1f} | {p_params} "
            f"| {p_flops} | {ratio} | {other_ratio} | {p_flops / ROWS['BFP'][2]:.2f} | {p_ap} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"height": args.height, "width": args.width, "rows": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
