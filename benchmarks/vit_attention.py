#!/usr/bin/env python
"""ViT-B (ViTDet) backbone forward+backward: four formulations of rel-pos attention, same weights.

explicit: ``softmax(q k^T * scale + rel_pos_bias) v`` (upstream's math, (B*heads, N, N) logits).
mask:     ``F.scaled_dot_product_attention(q, k, v, attn_mask=rel_pos_bias)`` ((N, N) float mask).
folded:   the bias folded into q and k (``fold_decomposed_rel_pos``), SDPA with no mask.
blocked:  blocks of query rows, the bias as the product's additive input, recomputed in the
          backward pass (``fpt.layers.blocked_attention``).
Each (input size, implementation, pass) runs in its own process, so peak memory is clean: on GPU
the peak of ``torch.cuda.max_memory_allocated`` during the step, on CPU the growth of the
process's peak RSS over its RSS once the model is built (glibc keeping freed memory, as
``train_net.py`` does on CPU). Three workloads: the attention of one
global block alone ("attention", all tokens of the image), of one windowed block ("window": the
image's 14x14 windows as a batch, as ViTDet's non-global blocks run them) and the whole backbone
("ViT-B"). Two passes: "train" (forward + backward, the default) and "infer" (forward under
``torch.no_grad``, eval mode).

    python benchmarks/vit_attention.py                      # CPU-friendly: 512, 1 iteration
    python benchmarks/vit_attention.py --sizes 1024 --depth 3 --workloads ViT-B
    python benchmarks/vit_attention.py --sizes 512 1024 --iters 5 --amp   # on a GPU
    python benchmarks/vit_attention.py --sizes 1024 --iters 5 --amp --amp-dtype float16  # train.amp
    python benchmarks/vit_attention.py --sizes 1024 --workloads attention window --passes train infer
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial

import psutil
import torch
from torch import nn

from fpt.modeling.vit import Attention, ViT
from fpt.utils.malloc import keep_freed_memory

# name: attn_impl, in table order
IMPLS = {"explicit": "explicit", "mask": "sdpa_mask", "folded": "sdpa_folded", "blocked": "blocked"}


def build(workload, size, depth, impl):
    tokens = size // 16
    if workload in ("attention", "window"):  # one block's attention: global, or its windows
        grid = tokens if workload == "attention" else 14
        windows = 1 if workload == "attention" else (-(-tokens // 14)) ** 2
        return Attention(
            768,
            12,
            use_rel_pos=True,
            input_size=(grid, grid),
            attn_impl=IMPLS[impl],
        ), (windows, grid, grid, 768)
    net = ViT(
        img_size=size,
        embed_dim=768,
        depth=depth,
        num_heads=12,
        drop_path_rate=0.1,
        window_size=14,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        window_block_indexes=[i for i in range(depth) if i % 3 != 2],
        use_rel_pos=True,
        attn_impl=IMPLS[impl],
    )
    return net, (1, 3, size, size)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args):
    """One measurement; prints a JSON line."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        keep_freed_memory()  # as train_net.py on CPU (train.cpu_malloc_cache)
    model, shape = build(args.workload, args.size, args.depth, args.impl)
    train = args.pass_ == "train"
    model.to(device).train(train)
    x = torch.randn(shape, device=device, requires_grad=train and args.workload != "ViT-B")
    dtype = getattr(torch, args.amp_dtype) if args.amp else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=args.amp):
            with torch.set_grad_enabled(train):
                out = model(x)
            out = out["last_feat"] if isinstance(out, dict) else out
        if train:
            out.float().square().mean().backward()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = psutil.Process().memory_info().rss / 2**20  # model and input are built
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    for _ in range(args.iters):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = peak_rss_mb() - rss_before
    print(
        json.dumps(
            {
                "time_ms": 1000 * sorted(times)[len(times) // 2],
                "peak_mb": peak,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            }
        )
    )


def run(workload, impl, size, args, pass_):
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--pass",
        pass_,
        "--workload",
        workload,
        "--impl",
        impl,
        "--size",
        str(size),
        "--depth",
        str(args.depth),
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
    ] + (["--amp", "--amp-dtype", args.amp_dtype] if args.amp else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--depth", type=int, default=12, help="ViT blocks (ViT-B: 12)")
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", action="store_true", help="autocast (bf16 unless --amp-dtype)")
    parser.add_argument(
        "--amp-dtype",
        choices=["bfloat16", "float16"],
        default="bfloat16",
        help="autocast type with --amp (training's AMP is float16 on CUDA)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["attention", "ViT-B"],
        choices=["attention", "window", "ViT-B"],
    )
    parser.add_argument("--passes", nargs="+", default=["train"], choices=["train", "infer"])
    parser.add_argument("--pass", dest="pass_", default="train", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    rows, device = [], None
    for size in args.sizes:
        for workload in args.workloads:
            for pass_ in args.passes:
                r = {}
                for impl in IMPLS:
                    r[impl] = run(workload, impl, size, args, pass_)
                    print(f"done: {workload} {size} {pass_} {impl}: {r[impl]}", file=sys.stderr)
                device = r["folded"]["device"]
                name = f"{workload} depth {args.depth}" if workload == "ViT-B" else workload
                name += "" if args.passes == ["train"] else f" ({pass_})"
                rows.append((f"{name} {size}x{size}", r))
    mem = "peak CUDA MB" if device != "cpu" else "peak RSS growth MB"
    print(
        f"device: {device}, {args.amp_dtype + ' autocast' if args.amp else 'fp32'}, "
        f"torch {torch.__version__}, "
        f"median of {args.iters} iteration(s) after {args.warmup} warm-up, "
        f"{'forward+backward' if args.passes == ['train'] else 'train: forward+backward, infer: forward'}, "
        f"batch 1; each cell: time ms / {mem}"
    )
    header = ["workload"] + [f"{i}" for i in IMPLS] + ["fastest", "least memory"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, r in rows:
        cells = [name] + [f"{r[i]['time_ms']:.0f} / {r[i]['peak_mb']:.0f}" for i in IMPLS]
        cells.append(min(IMPLS, key=lambda i: r[i]["time_ms"]))
        cells.append(min(IMPLS, key=lambda i: r[i]["peak_mb"]))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
