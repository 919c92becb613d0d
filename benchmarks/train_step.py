#!/usr/bin/env python
"""Time and peak memory of one training step (forward, backward, optimizer step) of a config's
model on a synthetic batch, with the config's optimizer, optionally under AMP as ``train.amp``
runs it (fp16 autocast + ``GradScaler`` on CUDA, bf16 autocast on CPU); with ``--inference``,
of its inference on that batch (eval mode, no gradients).

    # ViT-B Mask R-CNN (ViTDet), 1024x1024, batch 2, AMP (upstream ViTDet-B: 10.9 GB on A100)
    python benchmarks/train_step.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py \\
        --device cuda --amp
    # the same with folded attention
    python benchmarks/train_step.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py \\
        --device cuda --amp model.backbone.net.attn_impl=sdpa_folded
    # CPU, small (checks the plumbing)
    python benchmarks/train_step.py --config-file configs/Shapes/vitdet_mask_rcnn_tiny.py \\
        --size 128 128 --iters 1 --warmup 1
    # train.compile (the first warm-up step compiles: timed apart as first_step_seconds)
    python benchmarks/train_step.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py \\
        --compile
    # against upstream detectron2 main's ViTDet, same weights: this script in a venv with
    # detectron2 main, on upstream's projects/ViTDet config, loading the weights ours saved
    python benchmarks/train_step.py --config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py \\
        --device cpu --batch 1 --weights /tmp/vitb.pth        # saves them (first run)
    <main venv>/bin/python benchmarks/train_step.py --device cpu --batch 1 --weights /tmp/vitb.pth \\
        --config-file <detectron2 main>/projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py \\
        train.amp.enabled=False

The batch: ``--batch`` random images of ``--size`` with three boxes and masks each (for models
that take ``instances``). Weights are random (the config's ``init_checkpoint`` is not loaded).
Time: the mean over ``--iters`` steps after ``--warmup``, synchronised on CUDA. Memory: on CUDA
``torch.cuda.max_memory_allocated`` from before the first step to the end (model, gradients,
optimizer state, activations: what detectron2 logs as ``max_mem``); on CPU the peak RSS growth
over the RSS once the model is built. Prints a one-line summary and a ``RESULT {json}`` line.
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import json
import os
import resource
import sys
import time

import psutil
import torch
from detectron2.config import instantiate
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

from fpt.config import load_config
from fpt.utils.compile import compile_model
from fpt.utils.malloc import keep_freed_memory


def synthetic_batch(batch, height, width, device="cpu"):
    """``batch`` inputs: a random image (on the CPU: the model moves it) and three square
    instances (boxes, bit masks, classes 0-2, on ``device``). Also used by fpt_speed_memory.py."""
    g = torch.Generator().manual_seed(0)
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
        image = torch.rand(3, height, width, generator=g) * 255
        inputs.append(
            {"image": image, "instances": instances.to(device), "height": height, "width": width}
        )
    return inputs


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="a LazyConfig .py")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", nargs=2, type=int, default=[1024, 1024], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--amp", action="store_true", help="fp16 + GradScaler on CUDA, bf16 on CPU (train.amp)"
    )
    parser.add_argument(
        "--cudnn-benchmark",
        choices=["on", "off"],
        default="on",
        help="torch.backends.cudnn.benchmark (default on: every batch has one size)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="train.compile: torch.compile the model's parts"
    )
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="load the model's weights from PATH (strict) if it exists, else save them there",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc malloc keeps freed memory, as train_net.py does on CPU "
        "(train.cpu_malloc_cache, fpt.utils.malloc)",
    )
    parser.add_argument(
        "--inference",
        action="store_true",
        help="time the model's inference instead (eval mode, no gradients, same batch)",
    )
    parser.add_argument("opts", nargs="*", help="config overrides KEY=VALUE")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.iters < 1 or args.warmup < 1:
        raise SystemExit("--iters and --warmup must be at least 1")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory: the C library is not glibc")

    cfg = load_config(args.config_file, args.opts)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train(not args.inference)
    if args.weights and os.path.exists(args.weights):
        model.load_state_dict(torch.load(args.weights, map_location=device), strict=True)
    elif args.weights:
        torch.save(model.state_dict(), args.weights)
    if args.compile:
        compile_model(model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    inputs = synthetic_batch(args.batch, *args.size)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def infer():
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            outputs = model(inputs)
        return float(len(outputs[0]["instances"]))  # detections of the first image

    def step():
        with EventStorage(), torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            losses = model(inputs)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise SystemExit(
                f"non-finite loss: { {k: float(v.detach()) for k, v in losses.items()} }"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())

    rss_before = psutil.Process().memory_info().rss
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
    run = infer if args.inference else step
    first = time.perf_counter()
    run()
    sync()
    first = time.perf_counter() - first
    for _ in range(args.warmup - 1):
        run()
    sync()
    start = time.perf_counter()
    for _ in range(args.iters):
        loss = run()
    sync()
    seconds = (time.perf_counter() - start) / args.iters
    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
        where = torch.cuda.get_device_name()
    else:
        peak_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before) / 2**30
        where = f"cpu ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    precision = ("fp16 + GradScaler" if scaler else "bf16") if args.amp else "fp32"
    result = {
        "config": args.config_file,
        "opts": args.opts,
        "device": where,
        "precision": precision,
        "size": args.size,
        "batch": args.batch,
        "params_m": round(params, 1),
        "seconds": seconds,
        "first_step_seconds": first,
        "compiled": args.compile,
        "keep_freed_memory": args.keep_freed_memory,
        "peak_gb": peak_gb,
        "inference": args.inference,
        "detections" if args.inference else "loss": loss,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "torch": torch.__version__,
    }
    memory = "GPU memory" if device.type == "cuda" else "RSS growth"
    print(
        f"{' '.join([args.config_file] + args.opts)}: "
        f"{'inference' if args.inference else 'train step'} {args.size[0]}x{args.size[1]} "
        f"x{args.batch}, {precision}, on {where}: {seconds:.3f} s/iter (mean of {args.iters} "
        f"after {args.warmup} warm-up; first {first:.1f} s), peak {memory} {peak_gb:.2f} GB, "
        f"{params:.1f} M params{', compiled' if args.compile else ''}"
        f"{', freed memory kept' if args.keep_freed_memory else ''}"
    )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
