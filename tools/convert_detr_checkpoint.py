#!/usr/bin/env python
"""Convert an official DETR checkpoint (facebookresearch/detr, e.g. ``detr-r50-e632da11.pth``) or
a DETR-with-iRPE checkpoint (microsoft/Cream, wkcn/iRPE-model-zoo) to ours, checking every key and
shape against the model a config builds.

    python tools/convert_detr_checkpoint.py detr-r50-e632da11.pth detr_r50.pth
    python tools/convert_detr_checkpoint.py rpe-2.0-product-ctx-1-k.pth detr_irpe.pth
    python tools/convert_detr_checkpoint.py IN OUT model.transformer.enc_rpe=rpe-1.9-product-ctx-1-k

The output loads with ``train.init_checkpoint=OUT``. The config defaults to
``configs/COCO/DETR/detr_r50_500ep.py``, or ``detr_r50_irpe_k_300ep.py`` when the file holds
iRPE tables, whose spec is then taken from the file's ``args.enc_rpe2d`` when present (else one
with the same table shapes is used for the check: pass ``model.transformer.enc_rpe=SPEC`` when
you run the model, e.g. in ``demo/demo.py --opts``).
"""

import fpt  # noqa: F401  (must come first: compat layer)

import argparse
import os
import pickle
import sys

import torch
from detectron2.config import instantiate

from fpt.checkpoint import summarize_keys
from fpt.checkpoint.detr_weights import NotADetrCheckpoint, convert_detr_state_dict, infer_rpe_spec
from fpt.compat.checkpoint import UnsafeCheckpointError, allow_unsafe_load, load_trusted
from fpt.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs/COCO/DETR/detr_r50_500ep.py")
DEFAULT_IRPE_CONFIG = os.path.join(REPO, "configs/COCO/DETR/detr_r50_irpe_k_300ep.py")
RPE_KEY = "model.transformer.enc_rpe"


def read_detr_file(path):
    """(state_dict, args or None) of a DETR training/model-zoo file."""
    if not os.path.isfile(path):
        raise ValueError("no such file")
    try:
        data = load_trusted(path)
    except UnsafeCheckpointError:
        raise
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read it as a torch file ({first})") from None
    if not isinstance(data, dict):
        raise NotADetrCheckpoint(f"not a DETR checkpoint (a {type(data).__name__}, not a dict)")
    state_dict = data.get("model", data)
    if not isinstance(state_dict, dict):
        raise NotADetrCheckpoint("not a DETR checkpoint ('model' is not a state dict)")
    return state_dict, data.get("args")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="official DETR or DETR-with-iRPE .pth ({'model': ...})")
    parser.add_argument("output", help="output .pth")
    parser.add_argument("--config-file", metavar="FILE", help="the config to check against")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="fully unpickle a file holding objects outside the allow-list (a file you trust)",
    )
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_intermixed_args(argv)
    if args.unsafe_load:
        allow_unsafe_load()
    prog = os.path.basename(sys.argv[0]) if argv is None else "convert_detr_checkpoint.py"

    try:
        official, train_args = read_detr_file(args.input)
        state_dict, report = convert_detr_state_dict(official)
    except UnsafeCheckpointError as e:  # names the file and the --unsafe-load switch
        raise SystemExit(str(e))
    except ValueError as e:  # NotADetrCheckpoint included
        raise SystemExit(f"{args.input}: {e}")

    opts = list(args.opts)
    file_spec = getattr(train_args, "enc_rpe2d", None) or None
    if file_spec:
        print(f"{args.input}: args.enc_rpe2d = {file_spec}")
    spec = infer_rpe_spec(state_dict)
    config_file = args.config_file or (DEFAULT_IRPE_CONFIG if spec else DEFAULT_CONFIG)
    if not any(o.split("=", 1)[0].lstrip("+") == RPE_KEY for o in opts):
        if spec is None:
            opts.append(f"{RPE_KEY}=null")
        elif file_spec:
            opts.append(f"{RPE_KEY}={file_spec}")
        else:
            opts.append(f"{RPE_KEY}={spec}")
            print(
                f"{args.input}: iRPE tables shaped as {spec} (the file does not record the "
                f"bucket method and ratio: run the model with {RPE_KEY}=<its spec>)"
            )
    try:
        cfg = load_config(config_file, opts)
        with torch.device("meta"):  # names and shapes only
            target = instantiate(cfg.model).state_dict()
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"{prog}: error: {e}")

    for key, value in state_dict.items():
        if key in target and tuple(value.shape) != tuple(target[key].shape):
            hint = ""
            if ".rpe_" in key:
                hint = f" (set {RPE_KEY}=<the checkpoint's spec>)"
            raise SystemExit(
                f"{args.input}: {key}: checkpoint shape {tuple(value.shape)} != model shape "
                f"{tuple(target[key].shape)} for {os.path.relpath(config_file)}{hint}"
            )
    unused = [k for k in state_dict if k not in target]
    missing = [k for k in target if k not in state_dict]
    model = {k: v.detach().clone().contiguous() for k, v in state_dict.items() if k in target}
    torch.save({"model": model, "__author__": "fpt/tools/convert_detr_checkpoint.py"}, args.output)

    print(
        f"{args.output}: {len(model)} tensors for {os.path.relpath(config_file)} "
        f"({' '.join(o for o in opts if o.startswith(RPE_KEY))})"
    )
    print(f"  renamed ({len(report['renamed'])}): backbone.0.body.* -> backbone.*")
    kept, tables = report["kept"], [k for k in report["kept"] if ".rpe_" in k]
    print(f"  kept ({len(kept)}): {summarize_keys(kept, detailed_prefix='transformer.rpe')}")
    if tables:
        print(f"  of which iRPE tables ({len(tables)}): {summarize_keys(tables, 'transformer.')}")
    if report["class_head"]:
        print(
            f"  class head 92 -> 81 rows (80 COCO ids in order, then no-object): "
            f"{', '.join(report['class_head'])}"
        )
    if unused:
        print(f"  unused, in the file only ({len(unused)}): {summarize_keys(unused, '')}")
    if missing:
        print(f"  missing, in the model only ({len(missing)}): {summarize_keys(missing, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
