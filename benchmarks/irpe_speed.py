#!/usr/bin/env python
"""iRPE cost: a DETR encoder layer with each iRPE spec against plain attention, and our
gather / scatter terms against the materialized formulation (Cream's), side by side in one run.

1. "layer": a DETR ``TransformerEncoderLayer`` (d_model 256, 8 heads, FFN 2048, dropout 0.1,
   train mode, all-False key padding mask as DETR passes it), forward+backward, on the grids
   25x34 and 34x50 (an 800x1066 / 1066x1600 image at stride 32), batch 2, with ``rpe=None`` and
   each spec of --specs. Target (issue 10): rpe-2.0-product-ctx-1-k adds at most 25%.
2. "terms": one iRPE term alone at 34x50 (B 2, H 8, D 32, product ratio 2.0: 81 buckets, shared
   table), forward+backward: the contextual q/k term by ``gather`` (``IRPE``) vs Cream's flat
   indexing (``irpe_qk_term_reference``), and the v term by ``scatter_add`` into buckets vs the
   materialized (heads, L, L, D) table (``irpe_v_term_reference``). Target: the v term uses at
   least 10x less memory than the materialized form.

Time: the median over --iters iterations after --warmup, all variants of a table built in one
process and timed in interleaved rounds (the order rotates every round), so load drift on a
shared machine hits them alike; "x plain" / "ref / ours" is the median of the per-round ratios.
Memory: the growth over one forward+backward (the first warm-up round, after one process-wide
warm-up step): on CUDA of ``torch.cuda.max_memory_allocated``; on CPU of the peak RSS (VmHWM,
reset through /proc/self/clear_refs), with glibc made to map every allocation of 1 MiB or more
on its own and ``malloc_trim`` before each step, so the RSS follows the live tensors (this
reads within 1 MB of a fresh process per variant, which --fresh-memory runs, at ~8 CPU-seconds
of imports each). The bucket ids of the grid (23 MB int64 at 34x50, cached and shared by all
encoder layers) are built beforehand and not counted; parameter gradients are, and for the
terms the gradient of the input (for the v term the (B, H, L, L) attention gradient, 185 MB at
34x50, in both columns).

    python benchmarks/irpe_speed.py                          # CPU, ~4 min on 2 busy cores
    python benchmarks/irpe_speed.py --parts layer --grids 34x50 --iters 7
    python benchmarks/irpe_speed.py --device cuda --iters 20 --warmup 5 [--amp]
    python benchmarks/irpe_speed.py --specs rpe-2.0-product-ctx-1-k rpe-1.9-product-ctx-0-qkv
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import torch

from fpt.layers.irpe import (
    IRPE,
    irpe_qk_term_reference,
    irpe_v_term_reference,
    parse_rpe_spec,
)
from fpt.modeling.detr.transformer import TransformerEncoderLayer

PLAIN = "none"
DEFAULT_SPECS = [
    "rpe-2.0-product-ctx-1-k",
    "rpe-2.0-product-bias-1-k",
    "rpe-2.0-euc-ctx-0-k",
    "rpe-2.0-cross-ctx-1-k",
    "rpe-2.0-product-ctx-1-qkv",
]
TARGET_SPEC = "rpe-2.0-product-ctx-1-k"
TARGET_TIME = 1.25  # at most 25% over plain
TARGET_V_MEMORY = 10.0  # at least 10x less than materialized
# term cases: name -> (term, implementation)
TERMS = {
    "qk-gather": ("q/k ctx", "gather (ours)"),
    "qk-reference": ("q/k ctx", "flat index (Cream)"),
    "v-scatter": ("v ctx", "scatter_add (ours)"),
    "v-reference": ("v ctx", "materialized (Cream)"),
}


def parse_grid(text):
    h, w = text.lower().split("x")
    return int(h), int(w)


# ---------------------------------------------------------------------------------------------
# workloads: each returns (step, modules) where step() runs one forward+backward
# ---------------------------------------------------------------------------------------------
def build_layer(spec, grid, args, device):
    h, w = grid
    L = h * w
    layer = TransformerEncoderLayer(
        args.d_model, args.heads, args.ffn, dropout=0.1, rpe=None if spec == PLAIN else spec
    )
    for p in layer.parameters():  # as DETR's Transformer._reset_parameters (tables included)
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    layer.to(device).train()
    src = torch.randn(L, args.batch, args.d_model, device=device, requires_grad=True)
    pos = torch.randn(L, args.batch, args.d_model, device=device)
    mask = torch.zeros(args.batch, L, dtype=torch.bool, device=device)

    def step():
        with autocast(device, args.amp):
            out = layer(src, (h, w), src_key_padding_mask=mask, pos=pos)
        out.float().square().mean().backward()
        layer.zero_grad(set_to_none=True)
        src.grad = None

    return step, layer


def build_term(case, grid, args, device):
    h, w = grid
    L, B, H, D = h * w, args.batch, args.heads, args.d_model // args.heads
    transposed = case.startswith("qk")
    rpe = IRPE(D, H, mode="ctx", method="product", ratio=2.0, transposed=transposed,
               shared_head=True).to(device)  # fmt: skip
    torch.nn.init.normal_(rpe.lookup_table_weight, std=0.05)
    if transposed:  # x: q * scale
        x = torch.randn(B, H, L, D, device=device).mul_(D**-0.5).requires_grad_()
        grad = torch.randn(B, H, L, L, device=device)
    else:  # x: the attention weights
        x = torch.randn(B, H, L, L, device=device).softmax(-1).requires_grad_()
        grad = torch.randn(B, H, L, D, device=device)
    ids = rpe.bucket_ids(L, grid, device)
    reference = irpe_qk_term_reference if transposed else irpe_v_term_reference

    def step():
        with autocast(device, args.amp):
            if case.endswith("reference"):
                out = reference(x, rpe.lookup_table_weight, ids)
            else:
                out = rpe(x, grid)
        out.backward(grad.to(out.dtype))
        rpe.zero_grad(set_to_none=True)
        x.grad = None

    return step, rpe


def autocast(device, amp):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def build(args, device, name):
    grid = parse_grid(args.grid)
    if args.part == "layer":
        step, module = build_layer(name, grid, args, device)
    else:
        step, module = build_term(name, grid, args, device)
    for m in module.modules():  # bucket ids are cached per grid: build them outside the peak
        if isinstance(m, IRPE):
            m.bucket_ids(grid[0] * grid[1], grid, device)
    return step


# ---------------------------------------------------------------------------------------------
# the worker: all variants of one table in one process; prints one JSON line
# ---------------------------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class CPUPeak:
    """Peak RSS growth of a block of code, in a process that keeps running other things.

    glibc serves allocations from 1 MiB up by mmap (``mallopt(M_MMAP_THRESHOLD)``, fixed, no
    longer adaptive) and returns them on free, and ``malloc_trim`` gives back freed heap before
    each measurement, so the RSS follows the live tensors; the peak RSS (VmHWM) is reset through
    /proc/self/clear_refs. Measured this way a variant reads the same to 1 MB as in a fresh
    process after a warm-up step. Without glibc / clear_refs: ``ru_maxrss`` growth (an upper
    part of the process's history can hide a smaller peak)."""

    M_MMAP_THRESHOLD = -3

    def __init__(self):
        try:
            import ctypes

            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(self.M_MMAP_THRESHOLD, 1 << 20)
        except (OSError, AttributeError):
            self.libc = None

    def __enter__(self):
        gc.collect()
        if self.libc is not None:
            self.libc.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.clear_refs = True
            self.base = _status_mb("VmRSS")
        except OSError:
            self.clear_refs = False
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return self

    def __exit__(self, *exc):
        if self.clear_refs:
            self.peak_mb = _status_mb("VmHWM") - self.base
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - self.base

    def restore(self):
        """Back to large mmap chunks for the timing (heap reuse as in a normal run)."""
        if self.libc is not None:
            self.libc.mallopt(self.M_MMAP_THRESHOLD, 32 << 20)


def _status_mb(field):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def peak_memory(step, device, cpu_peak):
    """Peak memory growth (MB) of one step."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with cpu_peak:
        step()
    return cpu_peak.peak_mb


def worker(args):
    """Build every variant of ``args.names``; one step of the first (process-wide warm-up);
    one step of each measuring its peak memory (the first warm-up round); the other warm-up
    rounds; ``args.iters`` timed rounds, the order rotating every round."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    cpu_peak = CPUPeak() if device.type == "cpu" else None
    steps = {name: build(args, device, name) for name in args.names}
    names = list(steps)
    steps[names[0]]()
    memory = {name: peak_memory(steps[name], device, cpu_peak) for name in names}
    if cpu_peak is not None:
        cpu_peak.restore()
    for _ in range(args.warmup - 1 if args.iters else 0):
        for name in names:
            steps[name]()
    times = {name: [] for name in names}
    for r in range(args.iters):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    print(json.dumps({"peak_mb": memory, "times_s": times}))


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run_worker(part, grid, names, iters, args):
    cmd = [
        sys.executable, __file__, "--worker", "--part", part, "--grid", grid, "--names", *names,
        "--device", args.device, "--iters", str(iters), "--warmup", str(args.warmup),
        "--batch", str(args.batch), "--d-model", str(args.d_model), "--heads", str(args.heads),
        "--ffn", str(args.ffn),
    ] + (["--amp"] if args.amp else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    what = "memory" if iters == 0 else f"{iters} round(s)"
    print(f"done: {part} {grid} {what}: {' '.join(names)}", file=sys.stderr, flush=True)
    return result


def measure(part, grid, names, iters, args):
    """{name: {"time_ms", "times_s", "peak_mb"}} for the variants ``names``."""
    r = run_worker(part, grid, names, iters, args)
    if args.fresh_memory:  # again, each variant alone in a fresh process
        r["peak_mb"] = {n: run_worker(part, grid, [n], 0, args)["peak_mb"][n] for n in names}
    return {
        n: {
            "times_s": r["times_s"][n],
            "time_ms": 1000 * statistics.median(r["times_s"][n]),
            "peak_mb": r["peak_mb"][n],
        }
        for n in names
    }


def round_ratio(results, name, base):
    """Median over rounds of time(name) / time(base), both timed in the same round."""
    return statistics.median(
        t / b for t, b in zip(results[name]["times_s"], results[base]["times_s"])
    )


def memory_ratio(results, name, base):
    return results[name]["peak_mb"] / max(results[base]["peak_mb"], 1e-6)


def spec_params(spec, args):
    if spec == PLAIN:
        return 0
    rpe = TransformerEncoderLayer(args.d_model, args.heads, args.ffn, rpe=spec).self_attn
    return sum(
        p.numel() for m in (rpe.rpe_q, rpe.rpe_k, rpe.rpe_v) if m is not None
        for p in m.parameters()
    )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--parts", nargs="+", default=["layer", "terms"],
                        choices=["layer", "terms"])  # fmt: skip
    parser.add_argument("--grids", nargs="+", default=["25x34", "34x50"],
                        help="token grids HxW of the layer part")  # fmt: skip
    parser.add_argument("--terms-grid", default="34x50", help="token grid of the terms part")
    parser.add_argument("--specs", nargs="+", default=DEFAULT_SPECS,
                        help="iRPE specs of the layer part (plain attention is always run)")  # fmt: skip
    parser.add_argument("--iters", type=int, default=2,
                        help="timed rounds of the layer part (default 2)")  # fmt: skip
    parser.add_argument("--terms-iters", type=int, default=1,
                        help="timed rounds of the terms part (default 1: the materialized v "
                        "term takes ~15-30 s per step on 2 CPU cores)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds, the first one measuring memory (at least 1)")  # fmt: skip
    parser.add_argument("--fresh-memory", action="store_true",
                        help="measure memory again with each variant alone in a fresh process "
                        "(replaces the in-process numbers; slower)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--grid", help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if min(args.iters, args.terms_iters, args.warmup) < 1:
        raise SystemExit("--iters, --terms-iters and --warmup must be at least 1")
    for spec in args.specs:
        try:
            parse_rpe_spec(spec)
        except ValueError as e:
            raise SystemExit(str(e))
    for grid in args.grids + [args.terms_grid]:
        try:
            parse_grid(grid)
        except ValueError:
            raise SystemExit(f"grid {grid!r} is not HxW, e.g. 34x50")

    start = time.perf_counter()
    specs = [PLAIN] + [s for s in args.specs if s != PLAIN]
    layer_rows, term_results = [], None
    if "layer" in args.parts:
        for grid in args.grids:
            layer_rows.append((grid, measure("layer", grid, specs, args.iters, args)))
    if "terms" in args.parts:
        term_results = measure("terms", args.terms_grid, list(TERMS), args.terms_iters, args)

    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    threads = "" if args.device == "cuda" else f", {torch.get_num_threads()} threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    mem = "peak CUDA MB" if args.device == "cuda" else "peak RSS growth MB"
    where = "each variant in a fresh process" if args.fresh_memory else "in-process"
    print(
        f"device: {device}{threads}, {'bf16 autocast' if args.amp else 'fp32'}, "
        f"torch {torch.__version__}; forward+backward; time: median of interleaved rounds "
        f"(layer {args.iters}, terms {args.terms_iters}) after {args.warmup} warm-up round(s); "
        f"memory: {mem} of one step ({where}); load average {load:.1f}; "
        f"{time.perf_counter() - start:.0f} s"
    )
    verdicts = []
    if layer_rows:
        print(
            f"\nDETR encoder layer (d {args.d_model}, {args.heads} heads, FFN {args.ffn}, "
            f"dropout 0.1, train), batch {args.batch}; x plain: time ratio is the median of "
            "per-round ratios"
        )
        header = ["grid (L)", "encoder self-attention", "iRPE params", "ms", "x plain", mem,
                  "x plain"]  # fmt: skip
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for grid, r in layer_rows:
            h, w = parse_grid(grid)
            for spec in specs:
                cells = [
                    f"{grid} ({h * w})",
                    "plain (rpe=None)" if spec == PLAIN else spec,
                    f"{spec_params(spec, args):,}",
                    f"{r[spec]['time_ms']:.0f}",
                    f"{round_ratio(r, spec, PLAIN):.2f}x",
                    f"{r[spec]['peak_mb']:.0f}",
                    f"{memory_ratio(r, spec, PLAIN):.2f}x",
                ]
                print("| " + " | ".join(cells) + " |")
            if TARGET_SPEC in r:
                ratio = round_ratio(r, TARGET_SPEC, PLAIN)
                verdicts.append(
                    f"{TARGET_SPEC} at {grid}: {ratio:.2f}x plain time (target <= "
                    f"{TARGET_TIME:.2f}x): {'met' if ratio <= TARGET_TIME else 'NOT met'}"
                )
    if term_results:
        h, w = parse_grid(args.terms_grid)
        r = term_results
        print(
            f"\niRPE terms alone at {args.terms_grid} (L {h * w}), B {args.batch}, H {args.heads}, "
            f"D {args.d_model // args.heads}, product ratio 2.0 (81 buckets), shared table; "
            "ref / ours > 1: ours is better"
        )
        header = ["term", "implementation", "ms", "ref / ours time", mem, "ref / ours memory"]
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for ours, ref in (("qk-gather", "qk-reference"), ("v-scatter", "v-reference")):
            for name in (ours, ref):
                term, impl = TERMS[name]
                cells = [
                    term,
                    impl,
                    f"{r[name]['time_ms']:.0f}",
                    f"{round_ratio(r, ref, ours):.2f}x" if name == ours else "",
                    f"{r[name]['peak_mb']:.0f}",
                    f"{memory_ratio(r, ref, ours):.1f}x" if name == ours else "",
                ]
                print("| " + " | ".join(cells) + " |")
        v_ratio = memory_ratio(r, "v-reference", "v-scatter")
        verdicts.append(
            f"v term memory at {args.terms_grid}: {v_ratio:.1f}x less than materialized (target "
            f">= {TARGET_V_MEMORY:.0f}x): {'met' if v_ratio >= TARGET_V_MEMORY else 'NOT met'}"
        )
    if verdicts:
        print("\nTargets (issue 10):")
        for line in verdicts:
            print(f"- {line}")


if __name__ == "__main__":
    main()
