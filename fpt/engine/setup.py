"""Per-process set-up: output folder, loggers, environment info, saved config, seeds.

detectron2's ``default_setup`` does the same, but leaves the config file open (a
``ResourceWarning`` on every run) and logs the config with ANSI colour codes.
"""

import logging
import os

import torch
from omegaconf import DictConfig, OmegaConf

from detectron2.config import LazyConfig
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

__all__ = ["default_setup", "cudnn_benchmark", "fixed_input_size"]


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
    ``config.yaml``, and seed every RNG with ``seed + rank`` (random when ``seed < 0``)."""
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
        if isinstance(cfg, DictConfig):
            LazyConfig.save(cfg, path)
        else:
            with open(path, "w") as f:
                f.write(cfg.dump())
        logger.info(f"Full config saved to {path}")
    seed_all_rng(None if seed < 0 else seed + rank)
    if not getattr(args, "eval_only", False):  # as detectron2: evaluation keeps torch's default
        torch.backends.cudnn.benchmark = cudnn_benchmark(cfg)
        logger.info(f"cudnn.benchmark: {torch.backends.cudnn.benchmark}")


def cudnn_benchmark(cfg):
    """Whether training runs with ``torch.backends.cudnn.benchmark`` (which times the
    convolution algorithms for every new input size: a gain only when sizes repeat).

    LazyConfig: ``train.cudnn_benchmark``; its default, None, means "when every batch has the same
    input size" (:func:`fixed_input_size`, e.g. the LSJ configs). yacs: ``CUDNN_BENCHMARK``
    (detectron2's key, default False).
    """
    if not isinstance(cfg, DictConfig):
        return bool(cfg.CUDNN_BENCHMARK)
    value = cfg.train.get("cudnn_benchmark")
    return fixed_input_size(cfg) if value is None else bool(value)


def fixed_input_size(cfg):
    """Whether a LazyConfig feeds the model one input size only: its backbone pads every batch
    to a fixed square (ViTDet's ``SimpleFeaturePyramid(square_pad=1024)``, as in LSJ), or its
    training augmentations end in a padded ``FixedSizeCrop``."""
    backbone = OmegaConf.select(cfg, "model.backbone", default=None)
    if backbone is not None and (backbone.get("square_pad") or 0) > 0:
        return True
    augs = OmegaConf.select(cfg, "dataloader.train.mapper.augmentations", default=None) or []
    last = augs[-1] if len(augs) else None
    if last is None or not hasattr(last, "get"):
        return False
    target = last.get("_target_")
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return name.rsplit(".", 1)[-1] == "FixedSizeCrop" and last.get("pad", True) is True
