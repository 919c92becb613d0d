"""Per-process set-up: output folder, loggers, environment info, saved config, seeds.

detectron2's ``default_setup`` does the same, but leaves the config file open (a
``ResourceWarning`` on every run) and logs the config with ANSI colour codes.
"""

import logging
import os

import torch

from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from fpt.config import RunConfig

__all__ = ["default_setup"]


def _env_info():
    """detectron2's ``collect_env_info``; it imports ``torch.utils.cpp_extension``, whose import
    logs "No CUDA runtime is found" on CPU machines: irrelevant here, so kept out of stderr."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        return collect_env_info()
    finally:
        cpp_logger.setLevel(level)


def default_setup(cfg, args, output_dir, seed):
    """Set up logging into ``output_dir`` (main process writes ``log.txt``, others
    ``log.txt.rank<N>``), log the environment and arguments, save the full config as
    ``config.yaml``, seed every RNG with ``seed + rank`` (random when ``seed < 0``), and, for
    training, set ``torch.backends.cudnn.benchmark`` (``RunConfig.cudnn_benchmark``: it times the
    convolution algorithms for every new input size, a gain only when sizes repeat)."""
    run = RunConfig.of(cfg)
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    for name in ("fvcore", "detectron2", "fpt"):
        setup_logger(
            output_dir,
            distributed_rank=rank,
            name=name,
            abbrev_name={"detectron2": "d2"}.get(name, name),
        )
    logger = logging.getLogger("fpt")
    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    logger.info("Environment info:\n" + _env_info())
    logger.info(f"Command line arguments: {args}")
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        run.save(path)
        logger.info(f"Full config saved to {path}")
    seed_all_rng(None if seed < 0 else seed + rank)
    if not getattr(args, "eval_only", False):  # as detectron2: evaluation keeps torch's default
        torch.backends.cudnn.benchmark = run.cudnn_benchmark
        logger.info(f"cudnn.benchmark: {torch.backends.cudnn.benchmark}")
