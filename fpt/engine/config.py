"""Training's part of config handling: :func:`scale_to_world_size`. Loading, override checks and
:data:`TRAIN_DEFAULTS` are :mod:`fpt.config_loading`'s (shared with the predictor and the demo)."""

import logging

from ..config_loading import ConfigError

__all__ = ["scale_to_world_size"]

logger = logging.getLogger(__name__)


def scale_to_world_size(cfg, world_size):
    """LazyConfig version of ``DefaultTrainer.auto_scale_workers`` (in place; returns cfg).

    With ``train.reference_world_size = R > 0`` and ``W`` processes: total batch x W/R,
    ``optimizer.lr`` x W/R, ``max_iter``, ``eval_period`` and ``checkpointer.period`` x R/W.
    The LR multiplier is defined on the fraction of training, so it needs no change.
    """
    ref = cfg.train.reference_world_size
    if not ref or ref == world_size:
        return cfg
    batch = cfg.dataloader.train.total_batch_size
    if batch % ref:
        raise ConfigError(
            f"dataloader.train.total_batch_size={batch} is not divisible by "
            f"train.reference_world_size={ref}"
        )
    scale = world_size / ref
    cfg.dataloader.train.total_batch_size = int(round(batch * scale))
    cfg.optimizer.lr = cfg.optimizer.lr * scale
    cfg.train.max_iter = int(round(cfg.train.max_iter / scale))
    cfg.train.eval_period = int(round(cfg.train.eval_period / scale))
    cfg.train.checkpointer.period = int(round(cfg.train.checkpointer.period / scale))
    cfg.train.reference_world_size = world_size
    logger.info(
        f"Auto-scaling the config to batch_size={cfg.dataloader.train.total_batch_size}, "
        f"learning_rate={cfg.optimizer.lr}, max_iter={cfg.train.max_iter}."
    )
    return cfg
