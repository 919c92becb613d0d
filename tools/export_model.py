#!/usr/bin/env python
"""Export a trained model to TorchScript or ONNX, checked against the eager model.

    python tools/export_model.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_tiny.py \\
        --format onnx --export-method tracing --output exported/ \\
        --opts train.init_checkpoint=output/shapes_mask_rcnn_R_18_FPN_tiny/model_final.pth

Writes ``model.ts`` (TorchScript) or ``model.onnx`` and ``export.json`` (input channel order,
pixel mean/std, test resize, class names and category ids, outputs) to ``--output``, after
running the written file on the sample image and on a second image of another size against the
eager model; a file that disagrees is not written. Run it with ``demo/demo.py --exported DIR`` or
``fpt.export.load_exported(DIR)``. ``--run-eval`` then evaluates the exported and the eager model
on the config's test set. ``--list`` prints what can be exported how.

Exit code: 0 done, 2 for an unsupported combination, a bad config or checkpoint, a failed export
or an export that disagrees with the eager model (one line on stderr).
"""

import os

# idle OpenMP threads sleep instead of spinning (as demo/demo.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import fpt  # noqa: E402,F401  (first of ours: adapts detectron2 to this stack)

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from detectron2.utils.logger import setup_logger  # noqa: E402

from fpt.config import ConfigError, load_config  # noqa: E402
from fpt.export import (  # noqa: E402
    FORMATS,
    METHODS,
    evaluate_exported,
    export_model,
    support_table,
)


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Example: " + __doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", metavar="FILE", help="LazyConfig .py or yacs .yaml")
    parser.add_argument("--format", choices=FORMATS, default="torchscript")
    parser.add_argument("--export-method", choices=METHODS, default="tracing")
    parser.add_argument("--output", metavar="DIR", help="folder for the model and export.json")
    parser.add_argument(
        "--sample-image",
        metavar="IMG",
        help="image to export and check with (default: the first image of the test set)",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (a traced TorchScript file runs there)")
    parser.add_argument(
        "--run-eval", action="store_true", help="evaluate the exported and the eager model"
    )
    parser.add_argument(
        "--eval-max-images", type=int, metavar="N", help="--run-eval on the first N images only"
    )
    parser.add_argument("--list", action="store_true", help="print the support matrix and exit")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides: key=value (LazyConfig) or KEY VALUE pairs (yacs)",
    )
    return parser


def format_support_table():
    """The support matrix as a Markdown table."""
    columns = [(f, m) for f in FORMATS for m in METHODS]
    header = "| model | " + " | ".join(f"{f} {m}" for f, m in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for name, cells in support_table():
        lines.append(
            f"| {name} | " + " | ".join("yes" if cells[c] else "no" for c in columns) + " |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(format_support_table())
        return 0
    if not args.config_file or not args.output:
        parser.error("--config-file and --output are required (or --list)")
    try:
        cfg = load_config(args.config_file, args.opts)
        result = export_model(
            cfg,
            args.output,
            format=args.format,
            method=args.export_method,
            sample_image=args.sample_image,
            device=args.device,
            config_file=args.config_file,
        )
        print(result.summary())
        if args.run_eval:
            results = evaluate_exported(
                cfg, args.output, device=args.device, max_images=args.eval_max_images
            )
            print(format_eval(results))
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def format_eval(results):
    """Exported vs eager: one line per task and metric (AP, AP50, AP75 / mIoU, ...)."""
    lines = ["metric            exported      eager"]
    exported, eager = results["exported"], results.get("eager", {})
    for task, metrics in exported.items():
        for metric, value in metrics.items():
            if "-" in metric:  # per-category rows: in the evaluator's own log
                continue
            other = eager.get(task, {}).get(metric)
            other = f"{other:10.3f}" if isinstance(other, float) else " " * 10
            lines.append(f"{task + '/' + metric:<16} {value:10.3f} {other}")
    return "\n".join(lines)


if __name__ == "__main__":
    setup_logger(name="fpt")
    setup_logger(name="detectron2", abbrev_name="d2")
    logging.getLogger("fpt").setLevel(logging.INFO)
    sys.exit(main())
