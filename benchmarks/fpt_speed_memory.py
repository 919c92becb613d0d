#!/usr/bin/env python
"""Inference time, training-step time and peak memory of Mask R-CNN R-50: FPN vs FPT, with each
attention option, measured side by side in one run (each model in its own subprocess, so every
peak is clean), with ratios to FPN.

    python benchmarks/fpt_speed_memory.py --device cuda          # 800x1333 inference,
                                                                 # 1024x1024 batch-2 training step
    python benchmarks/fpt_speed_memory.py --quick                # CPU, a few minutes
    python benchmarks/fpt_speed_memory.py --variants FPN FPT-sdpa --infer-size 800 1333

Variants: FPN (detectron2's mask_rcnn_fpn), and configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py with
attention "sdpa" (fused scaled_dot_product_attention), "chunked" (explicit softmax over 1024-query
chunks, recomputed in backward), "naive" (the explicit formula; run only where its largest
attention tensor fits in --naive-max-gb), "LGT" (locality-constrained GT, 3x3 window, on every
level), "kvpool" (keys/values average-pooled 4x at P2 and 2x at P3), and "LGT+kvpool" (local GT
into P2, pooling as "kvpool").

Memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS
(``ru_maxrss``) and its growth over the RSS after the model is built (psutil).
Writes ``results.json`` and ``speed_memory.png`` to --output.
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import psutil
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.model_zoo import get_config
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPT_CONFIG = os.path.join(REPO, "configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py")
VARIANTS = {
    "FPN": None,
    "FPT-sdpa": dict(attention="sdpa"),
    "FPT-chunked": dict(attention="chunked"),
    "FPT-naive": dict(attention="naive"),
    "FPT-LGT": dict(grounding_mode="local"),
    "FPT-kvpool": dict(kv_pool=[4, 2, 1, 1]),
    "FPT-LGT+kvpool": dict(
        grounding_mode=["local", "global", "global", "global"], kv_pool=[4, 2, 1, 1]
    ),
}


def build_model(variant):
    if VARIANTS[variant] is None:
        cfg = get_config("common/models/mask_rcnn_fpn.py")
    else:
        cfg = LazyConfig.load(FPT_CONFIG)
        cfg.model.backbone.update(VARIANTS[variant])
    return instantiate(cfg.model)


def naive_gigabytes(height, width, batch, train):
    """Largest tensor of the naive formula in FPT: ST at P2 (B N L S) or GT P2 <- P3
    (B N L S d for the Euclidean difference), fp32; x2 when activations are kept for backward."""
    p2 = -(-height // 32) * 8 * (-(-width // 32) * 8)
    st = batch * 2 * p2 * p2
    gt = batch * 4 * p2 * (p2 // 4) * 64
    return max(st, gt) * 4 * (2 if train else 1) / 2**30


def synthetic_batch(batch, height, width, device):
    inputs = []
    for i in range(batch):
        instances = Instances((height, width))
        masks = torch.zeros(3, height, width, dtype=torch.bool)
        for j in range(3):
            y, x = (height // 5) * (j + 1), (width // 5) * (j + 1 + i % 2)
            masks[j, y - height // 8 : y + height // 8, x - width // 8 : x + width // 8] = True
        instances.gt_masks = BitMasks(masks)
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances.gt_classes = torch.tensor([0, 1, 2])
        inputs.append(
            {"image": torch.rand(3, height, width) * 255, "instances": instances.to(device)}
        )
    return inputs


def child(args):
    """Measure one variant in one mode; print one JSON line."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(args.variant).to(device)
    train = args.mode == "train"
    height, width = args.train_size if train else args.infer_size
    batch = args.train_batch if train else 1
    inputs = synthetic_batch(batch, height, width, device)
    if not train:
        inputs = [{"image": x["image"]} for x in inputs]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train(train)

    def step():
        if train:
            with EventStorage():
                loss = sum(model(inputs).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()

    base_rss = psutil.Process().memory_info().rss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    seconds = (time.perf_counter() - start) / args.iters
    result = {"variant": args.variant, "mode": args.mode, "seconds": seconds}
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["peak_gb"] = peak / 2**30
        result["growth_gb"] = (peak - base_rss) / 2**30
    print("RESULT " + json.dumps(result), flush=True)


def run_child(args, variant, mode):
    height, width = args.train_size if mode == "train" else args.infer_size
    batch = args.train_batch if mode == "train" else 1
    if variant == "FPT-naive":
        need = naive_gigabytes(height, width, batch, mode == "train")
        if need > args.naive_max_gb:
            return {"variant": variant, "mode": mode, "skipped": f"needs ~{need:.0f} GB"}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--mode", mode]
    cmd += ["--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup)]
    cmd += ["--infer-size", *map(str, args.infer_size), "--train-size", *map(str, args.train_size)]
    cmd += ["--train-batch", str(args.train_batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"variant": variant, "mode": mode, "skipped": f"failed: {error[:80]}"}


def table(results, args):
    mem = "peak GPU mem (GB)" if args.device == "cuda" else "peak RSS (GB) [growth]"
    lines = [
        f"| variant | infer {args.infer_size[0]}x{args.infer_size[1]} (s) | ratio | {mem} "
        f"| train {args.train_size[0]}x{args.train_size[1]} x{args.train_batch} (s) | ratio "
        f"| {mem} |",
        "|---" * 7 + "|",
    ]
    base = {m: results.get(("FPN", m), {}).get("seconds") for m in ("infer", "train")}
    for variant in args.variants:
        cells = [variant]
        for mode in ("infer", "train"):
            r = results.get((variant, mode))
            if r is None:
                cells += ["-", "-", "-"]
            elif "skipped" in r:
                cells += [r["skipped"], "-", "-"]
            else:
                ratio = f"{r['seconds'] / base[mode]:.2f}" if base[mode] else "-"
                growth = f" [{r['growth_gb']:.2f}]" if "growth_gb" in r else ""
                cells += [f"{r['seconds']:.2f}", ratio, f"{r['peak_gb']:.2f}{growth}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for col, (mode, key, label) in enumerate(
        [
            ("infer", "seconds", "inference s"),
            ("infer", "peak_gb", "inference peak GB"),
            ("train", "seconds", "train step s"),
            ("train", "peak_gb", "train peak GB"),
        ]
    ):
        names = [v for v in args.variants if key in results.get((v, mode), {})]
        axes[col].barh(names, [results[(v, mode)][key] for v in names], color="tab:blue")
        axes[col].set_title(label)
        axes[col].invert_yaxis()
    fig.suptitle(f"Mask R-CNN R-50, {args.device}: FPN vs FPT attention options")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized: 384x640 inference, 384x384 x2 training step, 1 iteration",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"]
    )
    parser.add_argument("--infer-size", nargs=2, type=int, default=[800, 1333], metavar=("H", "W"))
    parser.add_argument("--train-size", nargs=2, type=int, default=[1024, 1024], metavar=("H", "W"))
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--naive-max-gb",
        type=float,
        default=3.0,
        help="run the naive formula only where its largest tensor fits in this",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--output", default="output/fpt_speed_memory")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["infer", "train"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.variant = args.child
        return child(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.quick:
        args.infer_size, args.train_size, args.iters = [384, 640], [384, 384], 1

    from tqdm import tqdm

    jobs = [(v, m) for m in args.modes for v in args.variants]
    results = {}
    for variant, mode in tqdm(jobs, desc="measuring", unit="run"):
        results[(variant, mode)] = run_child(args, variant, mode)
        tqdm.write(json.dumps(results[(variant, mode)]))
    print(
        f"\nMask R-CNN R-50 on {args.device} ({torch.get_num_threads()} threads); "
        f"mean of {args.iters} after {args.warmup} warm-up; ratio = time / FPN time"
    )
    print(table(results, args))
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"args": vars(args), "results": list(results.values())}, f, indent=1)
    plot(results, args, os.path.join(args.output, "speed_memory.png"))
    print(f"wrote {args.output}/results.json and speed_memory.png")


if __name__ == "__main__":
    sys.exit(main())
