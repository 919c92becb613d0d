#!/usr/bin/env python
"""Speed and peak memory of a config's model: inference, a training step, the data loader alone,
or a whole evaluation, for any config we ship (LazyConfig or yacs).

    python tools/benchmark.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_tiny.py \\
        --task inference train.init_checkpoint=output/shapes_mask_rcnn_R_18_FPN_tiny/model_final.pth

Tasks (one per run, so that the process's memory is the task's):

* ``inference``: images/s and per-image latency (p50/p90/p99) of :class:`fpt.predictor.Predictor`
  on the config's test images, read from disk beforehand and put through the test-time resize
  (the latency includes the resize and the post-processing, batch 1);
* ``train``: iterations/s and images/s of the training step of :class:`fpt.engine.Trainer`
  (its loader, AMP, accumulation and clipping as configured; no hooks: nothing is written);
* ``data``: images/s of the training data loader alone (reading, mapping, batching);
* ``eval``: the time of an evaluation on the test set (inference and the evaluator), and its
  metrics.

``--warmup`` steps are run first and not timed (for ``eval``, none). Weights: the config's
checkpoint (``train.init_checkpoint`` / ``MODEL.WEIGHTS``); with none, or ``--random-weights``,
the model keeps its initial weights (said in the output; timing R-CNNs with random weights
changes the number of boxes their heads post-process). Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` over the timed steps; on CPU the process's peak resident
memory (VmHWM) over the timed steps, reset when they start (Linux ``/proc/self/clear_refs``;
elsewhere the process's peak since it started, said so), and its growth over the resident
memory when they start. ``--compile`` switches on the config's ``train.compile`` (yacs
``SOLVER.COMPILE.ENABLED``); its first steps compile, so give it a ``--warmup`` of 2 or more.

Prints a table and writes it as JSON (``--json-out``, default
``<output_dir>/benchmark_<task>.json``). Exit code 2 with one line on stderr for a bad config,
checkpoint, dataset or value.
"""

import os

# idle OpenMP threads sleep instead of spinning (as train_net.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (first of ours: adapts detectron2 to this stack)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

import detectron2  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from fpt.checkpoint import CheckpointError  # noqa: E402
from fpt.compat.checkpoint import UnsafeCheckpointError  # noqa: E402
from fpt.config import ConfigError, RunConfig, is_lazy_config, load_config  # noqa: E402
from fpt.data import DatasetError, ImageReadError, check_registered, read_image  # noqa: E402
from fpt.engine import Trainer  # noqa: E402
from fpt.engine.main import register_datasets  # noqa: E402
from fpt.engine.train_loop import NonFiniteLossError  # noqa: E402
from fpt.evaluation import evaluate  # noqa: E402
from fpt.predictor import Predictor  # noqa: E402
from fpt.utils.compile import CompileError  # noqa: E402
from fpt.utils.malloc import keep_freed_memory  # noqa: E402

TASKS = ("inference", "train", "data", "eval")
# default timed steps and warm-up steps of each task (eval: the whole test set, no warm-up)
DEFAULT_ITERS = {"inference": 50, "train": 20, "data": 50, "eval": None}
DEFAULT_WARMUP = {"inference": 5, "train": 3, "data": 5, "eval": 0}
USER_ERRORS = (
    ConfigError,
    DatasetError,
    ImageReadError,
    CheckpointError,
    UnsafeCheckpointError,
    CompileError,
    NonFiniteLossError,
    OSError,
)


class BenchmarkError(ValueError):
    """A request this tool cannot answer (message: one line)."""


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Example: " + __doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help=".py or .yaml")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--num-iter",
        type=int,
        metavar="N",
        help="timed images (inference), iterations (train), batches (data) or test images "
        "(eval; default: the whole test set); defaults: "
        + ", ".join(f"{t} {n}" for t, n in DEFAULT_ITERS.items() if n),
    )
    parser.add_argument(
        "--warmup",
        type=int,
        metavar="W",
        help="untimed steps first; defaults: "
        + ", ".join(f"{t} {n}" for t, n in DEFAULT_WARMUP.items() if n),
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: the config's device)")
    parser.add_argument(
        "--compile", action="store_true", help="train.compile.enabled=True (yacs: SOLVER.COMPILE)"
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="load no checkpoint (inference, eval)"
    )
    parser.add_argument(
        "--json-out", metavar="FILE", help="default: <output_dir>/benchmark_<task>.json"
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: key=value (LazyConfig) or KEY VALUE pairs (yacs)",
    )
    return parser


# ---- what a run is measured on ------------------------------------------------------------
def load_run(path, opts, device=None, compile=False):
    """The :class:`RunConfig` of ``path`` with ``opts``, plus the device and compile switches
    as overrides of the config's own keys (so the trainer and the predictor both see them)."""
    cfg = load_config(path, opts)
    extra = []
    lazy = is_lazy_config(cfg)
    if device:
        extra += [f"train.device={device}"] if lazy else ["MODEL.DEVICE", device]
    if compile:
        extra += ["train.compile.enabled=True"] if lazy else ["SOLVER.COMPILE.ENABLED", "True"]
    if extra:
        cfg = load_config(path, list(opts) + extra)
    run = RunConfig(cfg)
    register_datasets(run, None)
    return run


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory over a ``with`` block: CUDA ``max_memory_allocated`` on a CUDA device, else
    the process's peak resident memory, reset at the start where Linux allows it. ``result()``
    is a dict: ``kind`` (what was measured), ``peak_mb`` and, on CPU, ``growth_mb`` (peak over
    the resident memory at the start)."""

    def __init__(self, device, note=""):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.note = note

    def __enter__(self):
        if self.cuda:
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.start = psutil.Process().memory_info().rss
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (the peak resident set) to the current RSS
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def __exit__(self, *exc):
        if self.cuda:
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self.peak = _peak_rss()

    def result(self):
        if self.cuda:
            return {"kind": "CUDA max_memory_allocated", "peak_mb": self.peak / 2**20}
        kind = (
            "CPU peak RSS during the timed steps"
            if self.reset
            else "CPU peak RSS of the process (could not be reset)"
        )
        return {
            "kind": kind + self.note,
            "peak_mb": self.peak / 2**20,
            "growth_mb": max(self.peak - self.start, 0) / 2**20,
        }


def _peak_rss():
    """The process's peak resident memory in bytes (VmHWM, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentiles_ms(seconds):
    values = np.asarray(seconds) * 1000
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} | {
        "mean": float(values.mean())
    }


# ---- the tasks ------------------------------------------------------------------------------
def build_predictor(run, device, random_weights):
    """The model that ``inference`` and ``eval`` time: a :class:`Predictor` (its weights, test
    resize, channel order and ``train.compile``). Test-time augmentation wraps it here."""
    return Predictor(run, device=device, random_weights=random_weights)


def read_test_images(run, count, image_format):
    """``count`` test images (the test set's first ones, repeated when it has fewer) as arrays,
    read before timing."""
    dicts, _ = run.test_set()
    if not dicts:
        raise BenchmarkError(f"test set {run.test_dataset_names} has no images")
    unique = [read_image(d["file_name"], format=image_format) for d in dicts[:count]]
    return [unique[i % len(unique)] for i in range(count)], len(unique)


def bench_inference(run, device, num_iter, warmup, random_weights):
    predictor = build_predictor(run, device, random_weights)
    images, unique = read_test_images(run, warmup + num_iter, predictor.image_format)
    for image in images[:warmup]:
        predictor(image)
    latencies = []
    with PeakMemory(predictor.device) as memory:
        for image in images[warmup:]:
            synchronize(predictor.device)
            start = time.perf_counter()
            predictor(image)
            synchronize(predictor.device)
            latencies.append(time.perf_counter() - start)
    sizes = {tuple(predictor.preprocess(im)["image"].shape[1:]) for im in images[warmup:][:unique]}
    return {
        "images": num_iter,
        "distinct_images": min(unique, num_iter),
        "input_sizes": sorted([list(s) for s in sizes]),
        "images_per_s": num_iter / sum(latencies),
        "latency_ms": percentiles_ms(latencies),
        "memory": memory.result(),
        "weights": predictor.weights or "random",
    }


class TimingTrainer(Trainer):
    """:class:`Trainer` without hooks (no checkpoints, writers, evaluation, LR schedule): its
    model, optimizer, data loader and training step, as ``train_net.py`` builds them."""

    def build_hooks(self):
        return []


def bench_train(run, num_iter, warmup):
    trainer = TimingTrainer(run)
    device = trainer.settings.device
    if device == "cpu" and trainer.settings.cpu_malloc_cache:
        keep_freed_memory()  # as train_net.py (fpt.engine.main)
    images_per_iter = run.total_batch_size * trainer.settings.iter_size

    def step(i):
        trainer.iter = i
        trainer.run_step()

    with EventStorage(0):
        for i in range(warmup):
            step(i)
        with PeakMemory(device) as memory:
            synchronize(device)
            start = time.perf_counter()
            for i in range(warmup, warmup + num_iter):
                step(i)
            synchronize(device)
            seconds = time.perf_counter() - start
    return {
        "iterations": num_iter,
        "images_per_iter": images_per_iter,
        "iter_per_s": num_iter / seconds,
        "images_per_s": num_iter * images_per_iter / seconds,
        "s_per_iter": seconds / num_iter,
        "amp": trainer.settings.amp,
        "compiled": list(trainer.compiled_parts),
        "memory": memory.result(),
    }


def bench_data(run, num_iter, warmup):
    # the trainer's own construction (its sampler, seeded as train.seed says), without a model
    trainer_parts = SimpleNamespace(run=run, settings=run.train_settings())
    loader, _ = Trainer._build_train_loader(trainer_parts)
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    images = 0
    with PeakMemory("cpu", note=", this process (not its loader workers)") as memory:
        start = time.perf_counter()
        for batch in itertools.islice(batches, num_iter):
            images += len(batch)
        seconds = time.perf_counter() - start
    return {
        "batches": num_iter,
        "images": images,
        "images_per_s": images / seconds,
        "batches_per_s": num_iter / seconds,
        "memory": memory.result(),
    }


class FirstImages:
    """The first ``count`` batches of a test loader (``len`` included, as evaluators need)."""

    def __init__(self, loader, count):
        self.loader, self.count = loader, min(count, len(loader))

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.count)


def bench_eval(run, device, num_iter, random_weights):
    predictor = build_predictor(run, device, random_weights)
    name, label = run.evaluation_sets[0]  # the first test set
    loader = run.build_test_loader(name)
    if num_iter:
        loader = FirstImages(loader, num_iter)
    with tempfile.TemporaryDirectory() as tmp, PeakMemory(predictor.device) as memory:
        evaluator = run.build_evaluator(name, output_dir=tmp)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' summary: in the table
            results = evaluate(predictor.model, loader, evaluator, label)
        seconds = time.perf_counter() - start
    metrics = {  # NaN (e.g. no large objects): None in the JSON
        f"{task}/{name}": None if np.isnan(value) else float(value)
        for task, values in (results or {}).items()
        for name, value in values.items()
        if "-" not in name  # per-category rows: in the evaluator's own table
    }
    return {
        "dataset": label,
        "images": len(loader),
        "seconds": seconds,
        "images_per_s": len(loader) / seconds,
        "metrics": metrics,
        "memory": memory.result(),
        "weights": predictor.weights or "random",
    }


# ---- the report -----------------------------------------------------------------------------
def table_rows(result):
    """(name, value) rows of a task's result, for the table."""
    rows = []
    for key, value in result.items():
        if key == "memory":
            rows.append(("peak memory MB", f"{value['peak_mb']:.1f} ({value['kind']})"))
            if "growth_mb" in value:
                rows.append(("memory growth MB", f"{value['growth_mb']:.1f} (peak - at the start)"))
        elif key == "latency_ms":
            rows += [(f"latency {q} ms", f"{v:.1f}") for q, v in value.items()]
        elif key == "metrics":
            rows += [(name, "-" if v is None else f"{v:.2f}") for name, v in value.items()]
        elif isinstance(value, float):
            rows.append((key.replace("_per_", "/"), f"{value:.3f}"))
        else:
            rows.append((key.replace("_per_", "/"), str(value)))
    return rows


def format_table(report):
    rows = [("config", report["config"]), ("task", report["task"]), ("device", report["device"])]
    rows += table_rows(report["result"])
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run_task(args):
    run = load_run(args.config_file, args.opts, args.device, args.compile)
    check_registered(
        run.test_dataset_names if args.task in ("inference", "eval") else run.dataset_names
    )
    num_iter = args.num_iter if args.num_iter is not None else DEFAULT_ITERS[args.task]
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP[args.task]
    random_weights = args.random_weights or not run.weights
    if args.task in ("inference", "eval") and random_weights:
        why = "--random-weights" if args.random_weights else f"{run.weights_key} is empty"
        print(
            f"note: random weights ({why}): the times are the model's, its detections mean nothing"
        )
    device = run.train_settings().device if args.device is None else args.device
    if args.task == "inference":
        result = bench_inference(run, args.device, num_iter, warmup, random_weights)
    elif args.task == "train":
        result = bench_train(run, num_iter, warmup)
    elif args.task == "data":
        result = bench_data(run, num_iter, warmup)
        device = "cpu"
    else:
        result = bench_eval(run, args.device, num_iter, random_weights)
    return {
        "config": args.config_file,
        "opts": list(args.opts),
        "kind": run.kind,
        "task": args.task,
        "device": device_name(device),
        "num_iter": num_iter,
        "warmup": warmup,
        "compile": bool(run.compile_settings),
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "result": result,
    }, run


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    for name in ("num_iter", "warmup"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'warmup' else 1}")
    try:
        report, run = run_task(args)
        path = args.json_out or os.path.join(run.output_dir, f"benchmark_{args.task}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
    except USER_ERRORS + (BenchmarkError,) as e:
        message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"benchmark.py: error: {message}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
