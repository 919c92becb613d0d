"""What ``train_net.py`` does: check the config, launch the workers, train or evaluate."""

import logging
import os
import sys
from datetime import timedelta

from detectron2.utils import comm

from fpt.checkpoint import CheckpointError
from fpt.compat.checkpoint import UnsafeCheckpointError, allow_unsafe_load
from fpt.config import ConfigError, RunConfig, fit_num_classes, load_config
from fpt.data import DatasetError, ImageReadError, check_registered, register_coco
from fpt.evaluation import visualize_predictions
from fpt.utils.compile import CompileError, compile_model
from fpt.utils.malloc import keep_freed_memory

from .args import default_argument_parser
from .checkpoint import AtomicCheckpointer
from .ddp import create_ddp_model
from .launch import DistributedError, launch
from .preemption import Interrupted, watch_stop_signals
from .tracking import TrackingError
from .setup import default_setup
from .train_loop import NonFiniteLossError
from .trainer import Trainer

__all__ = ["main", "run", "prepare_config", "register_datasets"]

logger = logging.getLogger("fpt")

# errors that are the user's to fix: reported as one line, without a traceback
USER_ERRORS = (
    ConfigError,
    DatasetError,
    ImageReadError,
    DistributedError,
    NonFiniteLossError,
    CompileError,
    CheckpointError,
    UnsafeCheckpointError,
    TrackingError,
)


def register_datasets(cfg, args):
    """COCO jsons named on the command line (``--register-coco[-train|-test]``, recorded in the
    config, with absolute paths, so that its saved copy registers them again) or in the config
    (LazyConfig: ``datasets = [dict(name=..., json_file=..., image_root=...)]``; yacs:
    ``DATASETS.REGISTER_COCO``). ``--register-coco-train``/``-test`` also become the config's
    training/test sets."""
    run = RunConfig.of(cfg)
    train = getattr(args, "register_coco_train", None) or []
    test = getattr(args, "register_coco_test", None)
    given = (getattr(args, "register_coco", None) or []) + train + ([test] if test else [])
    if given:
        run.add_datasets_to_register(
            [(name, os.path.abspath(j), os.path.abspath(r)) for name, j, r in given]
        )
        run.use_datasets(train=[e[0] for e in train], test=[test[0]] if test else None)
    for name, json_file, image_root in run.datasets_to_register:
        register_coco(name, json_file, image_root)


def prepare_config(args):
    """The run's config: loaded with the overrides, its datasets registered (and checked), the
    heads' class counts fitted to the training set. Returns ``(RunConfig, message)``, the message
    (or None) saying which class counts were set."""
    config = RunConfig(load_config(args.config_file, args.opts))
    register_datasets(config, args)
    check_registered(datasets_needed(config, args))
    return config, fit_num_classes(config, args.opts, eval_only=args.eval_only)


def datasets_needed(config, args):
    """The datasets a run reads: the test sets for ``--eval-only``, else training and test sets."""
    return config.test_dataset_names if args.eval_only else config.dataset_names


def main(args):
    """One worker: set up, then evaluate (``--eval-only``) or train. Returns the results."""
    config, classes_message = prepare_config(args)
    s = config.train_settings()
    default_setup(config, args, s.output_dir, s.seed)
    if s.device == "cpu" and s.cpu_malloc_cache:
        keep_freed_memory()
    if classes_message:
        logger.info(classes_message)
    if args.eval_only:
        model = Trainer.build_model(config)
        if s.compile:
            compile_model(model, **s.compile, cache_dir=os.path.join(s.output_dir, "compile_cache"))
        AtomicCheckpointer(model, s.output_dir).resume_or_load(
            s.init_checkpoint, resume=args.resume
        )
        results = Trainer.test(config, create_ddp_model(model))
    else:
        watch_stop_signals()  # in a SLURM job: checkpoint and stop on preemption / time-out
        trainer = Trainer(config)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
        model = trainer.model
        if trainer.ema is not None:  # draw with the weights that were evaluated
            trainer.ema.model.load_state_dict(trainer.ema.model_state_dict())
    model = model.module if hasattr(model, "module") else model
    num_images, thresh = config.visualize
    num_images = args.visualize if args.visualize is not None else num_images
    if num_images and comm.is_main_process():
        test_names = config.dataset_names[-1:]
        out = os.path.join(s.output_dir, "visualizations")
        files = visualize_predictions(model, test_names[0], out, num_images, thresh)
        logger.info(f"Predictions on {len(files) - 1} {test_names[0]} images: {files[-1]}")
    return results


def run(argv=None):
    """Parse ``argv``, check the config before anything starts, launch :func:`main`."""
    args = default_argument_parser().parse_args(argv)
    if args.unsafe_load:
        allow_unsafe_load()  # inherited by the worker processes
    try:
        # fail fast, in the parent process: config, overrides and dataset names/paths
        config, _ = prepare_config(args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            timeout=timedelta(seconds=args.dist_timeout),
            device=config.device,
        )
    except USER_ERRORS as e:
        message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:  # a SLURM signal: the checkpoint is written
        print(f"{os.path.basename(sys.argv[0])}: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
