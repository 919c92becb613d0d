#!/usr/bin/env python
"""Inference time, training-step time, FLOPs and peak memory of Mask R-CNN R-50: FPN vs FPT, with
each attention option and the fast preset, measured side by side in one run (each model in its
own subprocess, so every peak is clean), with ratios to FPN and efficiency against the machine.

    python benchmarks/fpt_speed_memory.py --device cuda          # 800x1333 inference,
                                                                 # 1024x1024 batch-2 training step
    python benchmarks/fpt_speed_memory.py --quick                # CPU, a few minutes
    python benchmarks/fpt_speed_memory.py --variants FPN FPT-sdpa FPT-fast --modes infer

Variants: FPN (detectron2's mask_rcnn_fpn), configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py with
attention "sdpa" (fused scaled_dot_product_attention), "chunked" (explicit softmax over 1024-query
chunks, recomputed in backward), "naive" (the explicit formula; run only where its largest
attention tensor fits in --naive-max-gb), "LGT" (locality-constrained GT, 3x3 window, on every
level), "kvpool" (keys/values average-pooled 4x at P2 and 2x at P3), "LGT+kvpool" (local GT into
P2, pooling as "kvpool"), and "fast": configs/COCO/FPT/mask_rcnn_R_50_FPT_fast_1x.py.

FLOPs and efficiency (one image of inference; every op ``torch.utils.flop_counter.FlopCounterMode``
counts, with CPU's fused attention kernel added to it, one multiply-add = 2 FLOPs):

- peak: this machine's fp32 GFLOP/s, the best of ``torch.mm`` 2048/4096 and one large fused
  attention (FLOPs by FlopCounterMode / time), measured at the start and at the end of the run;
- counted: the FLOPs of the ops the model executes;
- useful: counted, less the discarded work: what every MoS attention call executes beyond the
  formula's ``2 B N L S (d + e + Cv)`` (N parts of d query/key channels, e = 1 for the Euclidean
  similarity's extra column, Cv value channels), i.e. zero-padded q/k/v columns;
- GFLOP/s = useful / time; efficiency = useful / time / peak.

Memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS
(``ru_maxrss``) and its growth over the RSS after the model is built (psutil). The load average
(``os.getloadavg``) before and after each measurement is recorded: on a shared machine, compare
ratios measured in one run. Writes ``results.json`` and ``speed_memory.png`` to --output.
"""

import os

# idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads
# made every measurement 1.2-1.6x slower and noisier (as in tests/conftest.py and demo/demo.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: F401  (must come first of ours: compat layer)

import argparse
import json
import resource
import subprocess
import sys
import time

import psutil
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate
from detectron2.model_zoo import get_config
from detectron2.utils.events import EventStorage
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from fpt.layers.mos_attention import MoSAttention
from train_step import synthetic_batch  # (benchmarks/ is on sys.path: this script's folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPT_CONFIG = os.path.join(REPO, "configs/COCO/FPT/mask_rcnn_R_50_FPT_1x.py")
FAST_CONFIG = os.path.join(REPO, "configs/COCO/FPT/mask_rcnn_R_50_FPT_fast_1x.py")
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
    "FPT-fast": FAST_CONFIG,
}


def build_model(variant):
    spec = VARIANTS[variant]
    if spec is None:
        cfg = get_config("common/models/mask_rcnn_fpn.py")
    elif isinstance(spec, str):
        cfg = LazyConfig.load(spec)
    else:
        cfg = LazyConfig.load(FPT_CONFIG)
        cfg.model.backbone.update(spec)
    return instantiate(cfg.model)


def count_cpu_fused_attention():
    """FlopCounterMode counts CUDA's fused attention kernels but not CPU's: register them."""
    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in flop_registry:
        return

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs):
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def machine_peak(device, repeats=5):
    """Best fp32 GFLOP/s of torch.mm 2048 / 4096 and a large fused attention on ``device``:
    {name: GFLOP/s} (FLOPs by FlopCounterMode, best of ``repeats`` timings each)."""
    count_cpu_fused_attention()
    mats = {n: torch.randn(n, n, device=device) for n in (2048, 4096)}
    q, k, v = (torch.randn(1, 2, 4096, 256, device=device) for _ in range(3))
    runs = {f"mm {n}": (lambda m=m: torch.mm(m, m)) for n, m in mats.items()}
    runs["sdpa"] = lambda: F.scaled_dot_product_attention(q, k, v)
    rates = {}
    for name, fn in runs.items():
        with FlopCounterMode(display=False) as counter:
            fn()
        seconds = min(_timed(fn, device) for _ in range(repeats))
        rates[name] = counter.get_total_flops() / seconds / 1e9
    return rates


def _timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class AttentionFlops:
    """Inside ``counter``, records what every MoS attention call executes beyond the formula
    ``2 B N L S (d + e + Cv)``: the discarded FLOPs (zero-padded columns)."""

    def __init__(self, counter):
        self.counter = counter
        self.formula = 0
        self.discarded = 0
        self._attend = MoSAttention.attend

    def __enter__(self):
        def attend(module, q, k, v, pi, *args, **kwargs):
            before = self.counter.get_total_flops()
            out = self._attend(module, q, k, v, pi, *args, **kwargs)
            executed = self.counter.get_total_flops() - before
            (batch, queries, channels), keys, parts = q.shape, k.shape[1], pi.shape[1]
            extra = module.similarity == "euclidean"
            formula = 2 * batch * parts * queries * keys * (channels // parts + extra + v.shape[-1])
            self.formula += formula
            self.discarded += max(0, executed - formula)
            return out

        MoSAttention.attend = attend
        return self

    def __exit__(self, *exc):
        MoSAttention.attend = self._attend


def naive_gigabytes(height, width, batch, train):
    """Largest tensor of the naive formula in FPT: ST at P2 (B N L S) or GT P2 <- P3
    (B N L S d for the Euclidean difference), fp32; x2 when activations are kept for backward."""
    p2 = -(-height // 32) * 8 * (-(-width // 32) * 8)
    st = batch * 2 * p2 * p2
    gt = batch * 4 * p2 * (p2 // 4) * 64
    return max(st, gt) * 4 * (2 if train else 1) / 2**30


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
    # timing only: lr 0 keeps the random weights where they are (the update still runs), so
    # that the timed steps cannot diverge (FPN at 128 px did: NaN boxes by the third step)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
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
    # the first step is counted (and warms up): FLOPs of every op, discarded attention FLOPs
    count_cpu_fused_attention()
    with FlopCounterMode(display=False) as counter, AttentionFlops(counter) as attention:
        step()
    for _ in range(args.warmup):
        step()
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    seconds = (time.perf_counter() - start) / args.iters
    counted = counter.get_total_flops()
    result = {
        "variant": args.variant,
        "mode": args.mode,
        "seconds": seconds,
        "counted_flops": counted,
        "load": [load_before, os.getloadavg()[0]],
    }
    if not train:  # the attention calls' backward is not seen by AttentionFlops
        result["useful_flops"] = counted - attention.discarded
        result["attention_formula_flops"] = attention.formula
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


def table(results, args, peak):
    """Markdown table: time, ratio to FPN, FLOPs, efficiency (inference), memory; train columns."""
    mem = "peak GPU mem GB" if args.device == "cuda" else "peak RSS GB [growth]"
    lines = [
        f"| variant | infer {args.infer_size[0]}x{args.infer_size[1]} s | x FPN | counted TFLOP "
        f"| useful TFLOP | useful GFLOP/s | efficiency | {mem} | load | train "
        f"{args.train_size[0]}x{args.train_size[1]} x{args.train_batch} s | x FPN | {mem} |",
        "|---" * 12 + "|",
    ]
    base = {m: results.get(("FPN", m), {}).get("seconds") for m in ("infer", "train")}
    for variant in args.variants:
        cells = [variant]
        for mode in ("infer", "train"):
            r = results.get((variant, mode))
            width = 8 if mode == "infer" else 3
            if r is None or "skipped" in r:
                cells += [r["skipped"] if r else "-"] + ["-"] * (width - 1)
                continue
            ratio = f"{r['seconds'] / base[mode]:.2f}" if base[mode] else "-"
            growth = f" [{r['growth_gb']:.2f}]" if "growth_gb" in r else ""
            memory = f"{r['peak_gb']:.2f}{growth}"
            if mode == "train":
                cells += [f"{r['seconds']:.2f}", ratio, memory]
                continue
            rate = r["useful_flops"] / r["seconds"] / 1e9
            cells += [
                f"{r['seconds']:.2f}",
                ratio,
                f"{r['counted_flops'] / 1e12:.2f}",
                f"{r['useful_flops'] / 1e12:.2f}",
                f"{rate:.0f}",
                f"{rate / peak:.2f}",
                memory,
                "{:.1f}-{:.1f}".format(*r["load"]),
            ]
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
    parser.add_argument(
        "--warmup", type=int, default=0, help="warm-up steps after the (counted) first one"
    )
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
    peaks = [machine_peak(args.device)]
    tqdm.write(f"peak GFLOP/s at the start: {json.dumps(peaks[0])}")
    results = {}
    for variant, mode in tqdm(jobs, desc="measuring", unit="run"):
        results[(variant, mode)] = run_child(args, variant, mode)
        tqdm.write(json.dumps(results[(variant, mode)]))
    peaks.append(machine_peak(args.device))
    peak = max(max(p.values()) for p in peaks)
    print(
        f"\nMask R-CNN R-50 on {args.device} ({torch.get_num_threads()} threads); "
        f"mean of {args.iters} after the counted step and {args.warmup} warm-up; "
        f"x FPN = time / FPN time; load = 1-min load average before-after the timed steps; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(
        "peak fp32 GFLOP/s (start; end): "
        + "; ".join(", ".join(f"{k} {v:.0f}" for k, v in p.items()) for p in peaks)
        + f" -> {peak:.0f}"
    )
    print(table(results, args, peak))
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(
            {"args": vars(args), "peaks": peaks, "results": list(results.values())}, f, indent=1
        )
    plot(results, args, os.path.join(args.output, "speed_memory.png"))
    print(f"wrote {args.output}/results.json and speed_memory.png")


if __name__ == "__main__":
    sys.exit(main())
