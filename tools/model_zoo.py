#!/usr/bin/env python
"""A model card for each config we ship: parameters, FLOPs at the config's test size, the
reference AP it aims at, and how to get its weights.

    python tools/model_zoo.py --list                                   # every config, one line each
    python tools/model_zoo.py configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py   # its full card

Everything comes from the configs themselves: the model they build, their test-time resize, and
their ``model_card = dict(reference_ap=..., source=..., weights=..., convert=..., note=...)``
(``weights``: the official checkpoint, loadable as ``train.init_checkpoint`` or converted first
by the ``convert`` command; None: train it). Without arguments: every config under
``configs/COCO`` and ``configs/Cityscapes``.

Parameters are counted on a model built on PyTorch's ``meta`` device (no memory, instant).
FLOPs (fvcore, one fused multiply-add = one flop, as ``tools/analyze_model.py``) need a real
forward pass on the CPU, which takes minutes for ViT-L/H or global FPT at COCO sizes: they are
cached in ``.cache/model_zoo_flops.json``, keyed by the model's structure and the input size, so
a changed config is counted again. ``--list`` and ``--no-flops`` count nothing new (cached
FLOPs are still shown). ``--size H W`` counts at another size (configs without a test resize,
such as the Shapes ones, need it).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (first of ours: adapts detectron2 to this stack)

import argparse  # noqa: E402
import glob  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from fpt.config import ConfigError, RunConfig, is_lazy_config, load_config  # noqa: E402
from fpt.utils.analysis import analyze_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("configs/COCO/**/*.py", "configs/Cityscapes/*.py")
DEFAULT_CACHE = os.path.join(REPO, ".cache", "model_zoo_flops.json")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Examples: " + __doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("configs", nargs="*", metavar="CFG", help="default: every shipped config")
    parser.add_argument("--list", action="store_true", help="one line per config, no new FLOPs")
    parser.add_argument("--no-flops", action="store_true", help="count no new FLOPs")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="FLOPs input size")
    parser.add_argument("--cache", default=DEFAULT_CACHE, metavar="FILE", help="FLOPs cache")
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="overrides for every config"
    )
    return parser


def shipped_configs():
    files = [
        f for pattern in SHIPPED for f in glob.glob(os.path.join(REPO, pattern), recursive=True)
    ]
    return sorted(os.path.relpath(f, REPO) for f in files)


def test_size(run):
    """(H, W) of the largest input the test-time resize gives (shorter side x longer-side cap,
    e.g. 800x1333, ViTDet's 1024x1024), or None without a resize."""
    for aug in run.test_augmentations().augs:
        short = getattr(aug, "short_edge_length", None)
        if short is None:
            continue
        short = max(short) if isinstance(short, (list, tuple)) else short
        cap = getattr(aug, "max_size", None) or short
        return int(short), int(min(max(cap, short), 100000))
    return None


def model_card(run):
    """The config's ``model_card`` as a dict (empty when it has none; yacs configs have none)."""
    if not is_lazy_config(run.cfg) or "model_card" not in run.cfg:
        return {}
    return OmegaConf.to_container(run.cfg.model_card, resolve=True)


def build_on_meta(run):
    """The model, built on the ``meta`` device (shapes only) where it can be, else on the CPU."""
    try:
        with torch.device("meta"):
            return run.build_model("meta")
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return run.build_model("cpu")


def structure_key(model, size):
    text = f"{model}\n{size[0]}x{size[1]}\n{sum(p.numel() for p in model.parameters())}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class FlopsCache:
    """FLOPs by model structure and input size, in a JSON file."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as f:
                self.entries = json.load(f)
        except (OSError, ValueError):
            self.entries = {}

    def get(self, key):
        return self.entries.get(key)

    def put(self, key, value):
        self.entries[key] = value
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(self.entries, f, indent=1, sort_keys=True)


def describe(path, opts, size=None, cache=None, count_flops=True):
    """A card: ``{"config", "kind", "model", "params", "trainable_params", "test_size",
    "gflops", "flops_source", "card"}``."""
    run = RunConfig(load_config(path, opts))
    try:
        model = build_on_meta(run)
    except (TypeError, ValueError, KeyError, AssertionError, AttributeError) as e:
        raise ConfigError(f"{path}: cannot build {run.model_key}: {type(e).__name__}: {e}")
    size = tuple(size) if size else test_size(run)
    info = {
        "config": path,
        "kind": run.kind,
        "model": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "test_size": list(size) if size else None,
        "gflops": None,
        "flops_source": "no test resize: give --size H W" if size is None else "not counted",
        "card": model_card(run),
    }
    if size is None:
        return info
    key = structure_key(model, size)
    cached = cache.get(key) if cache else None
    if cached:
        info.update(gflops=cached["gflops"], flops_source="cached")
    elif count_flops:
        start = time.perf_counter()
        result = analyze_model(run.build_model("cpu"), *size)
        seconds = time.perf_counter() - start
        info.update(
            gflops=result["flops"]["total"] / 1e9, flops_source=f"counted in {seconds:.0f} s"
        )
        if cache:
            cache.put(key, {"config": path, "size": list(size), "gflops": info["gflops"]})
    return info


def reference_text(card):
    ap = card.get("reference_ap")
    if not ap:
        return "none"
    return ", ".join(f"{name} AP {value}" for name, value in ap.items())


def weights_text(card, path):
    """How to get the weights, in one line."""
    if not card:
        return "no model card"
    url, convert = card.get("weights"), card.get("convert")
    if url and convert:
        return f"download {url}, then `{convert}`, then train.init_checkpoint={convert.split()[-1]}"
    if url:
        return f"train.init_checkpoint={url} (loads as is)"
    return f"train it: python train_net.py --config-file {path} --num-gpus 8"


def format_card(info):
    card = info["card"]
    size = info["test_size"]
    flops = (
        f"{info['gflops']:.1f} G at {size[0]}x{size[1]} ({info['flops_source']})"
        if info["gflops"] is not None
        else f"- ({info['flops_source']})"
    )
    lines = [
        info["config"],
        f"  model      {info['model']} ({info['kind']})",
        f"  params     {info['params'] / 1e6:.1f} M ({info['trainable_params'] / 1e6:.1f} M "
        "trainable)",
        f"  FLOPs      {flops}",
        f"  reference  {reference_text(card)}"
        + (f" ({card['source']})" if card.get("source") else ""),
        f"  weights    {weights_text(card, info['config'])}",
    ]
    if card.get("note"):
        lines.append(f"  note       {card['note']}")
    return "\n".join(lines)


def format_list(infos):
    rows = [("config", "params M", "GFLOPs", "test size", "reference AP", "weights")]
    for info in infos:
        card, size = info["card"], info["test_size"]
        rows.append(
            (
                info["config"],
                f"{info['params'] / 1e6:.1f}",
                "-" if info["gflops"] is None else f"{info['gflops']:.1f}",
                f"{size[0]}x{size[1]}" if size else "-",
                reference_text(card),
                "official" if card.get("weights") else ("train it" if card else "no card"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.size and min(args.size) < 1:
        parser.error("--size H W must be positive")
    paths = args.configs or shipped_configs()
    cache = FlopsCache(args.cache)
    count = not (args.list or args.no_flops)
    infos = []
    try:
        for path in paths:
            info = describe(path, args.opts, args.size, cache, count_flops=count)
            infos.append(info)
            if not args.list:
                print(format_card(info), flush=True)
    except (ConfigError, OSError) as e:
        print(f"model_zoo.py: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        print(format_list(infos))
    return 0


if __name__ == "__main__":
    sys.exit(main())
