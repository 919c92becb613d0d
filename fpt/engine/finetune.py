"""Fine-tuning helpers of the trainer: freezing parameters by name (``train.freeze``) and the
losses on the test set during training (``train.val_loss_period``)."""

import logging
import re

import torch
from torch.utils.data import DataLoader

from detectron2.data.common import MapDataset
from detectron2.data.samplers import InferenceSampler
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from fpt.config import ConfigError

from .rng import preserved_rng

__all__ = ["freeze_parameters", "ValidationLossHook"]

logger = logging.getLogger(__name__)


def freeze_parameters(model, patterns, key="train.freeze"):
    """Set ``requires_grad=False`` on every parameter whose name a pattern matches (before the
    optimizer is built, so that it holds only the trainable ones).

    A pattern is a regular expression matched at the start of the parameter name and ending at
    a ``.`` or the end of the name: ``backbone.net.blocks.[0-5]`` freezes blocks 0-5 (not block
    10), ``backbone.bottom_up`` the whole ResNet of an FPN.

    Args:
        model (nn.Module): the model (not yet wrapped in DDP).
        patterns (list[str]): regular expressions over ``model.named_parameters()`` names.
        key (str): the config key, for messages.

    Returns:
        str or None: one line with the counts of frozen tensors and values (None: no patterns).

    Raises:
        ConfigError: a pattern is not a regular expression, or matches no parameter name.
    """
    if not patterns:
        return None
    names = [name for name, _ in model.named_parameters()]
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(rf"(?:{pattern})(?:\.|$)"))
        except re.error as e:
            raise ConfigError(f"{key}: {pattern!r} is not a regular expression ({e})") from None
        if not any(compiled[-1].match(name) for name in names):
            raise ConfigError(
                f"{key}: {pattern!r} matches no parameter name (they look like {names[0]!r})"
            )
    tensors = values = 0
    for name, param in model.named_parameters():
        if any(c.match(name) for c in compiled):
            param.requires_grad_(False)
            tensors += 1
            values += param.numel()
    total = sum(p.numel() for p in model.parameters())
    return (
        f"{key}: froze {tensors} parameter tensors ({values:,} of {total:,} values) matching "
        f"{', '.join(patterns)}"
    )


class ValidationLossHook(HookBase):
    """Every ``period`` iterations (and after the last one), the model's losses on the first
    ``num_batches`` batches of the test set, logged as ``val_<loss>`` and ``val_total_loss``
    scalars of the trainer's event storage (so metrics.json, TensorBoard and the other writers
    get them, and the metrics plot draws them beside the training losses).

    The model stays in training mode (its losses need it) under ``torch.no_grad``; the
    statistics it would record (``class_error``, sampling counts...) go to a storage of their
    own, its buffers (BatchNorm running statistics) and the random number generators are
    restored afterwards, so training continues exactly as without the hook. Each process takes
    its share of the test set (``InferenceSampler``); the values are averaged over all batches
    of all processes. A collective: registered on every rank.

    Args:
        period (int): iterations between two computations.
        dataset (list[dict]), mapper (callable): the test set and a training-style mapper that
            keeps the annotations (:meth:`fpt.config.RunConfig.val_loss_set`).
        batch_size (int): images per batch (the training batch of one process).
        num_batches (int): batches per process.
        cuda (bool): the CUDA generators are preserved too.
    """

    def __init__(self, period, dataset, mapper, batch_size, num_batches, cuda=False):
        self.period = period
        self.num_batches = num_batches
        self.cuda = cuda
        self.loader = DataLoader(
            MapDataset(dataset, mapper),
            batch_size=batch_size,
            sampler=InferenceSampler(len(dataset)),
            collate_fn=lambda batch: batch,
            num_workers=0,
        )

    def after_step(self):
        it = self.trainer.iter + 1
        if it % self.period == 0 or it == self.trainer.max_iter:
            self.trainer.storage.put_scalars(
                **self.losses(self.trainer.model), smoothing_hint=False
            )

    @torch.no_grad()
    def losses(self, model):
        """``{"val_<loss>": mean, ..., "val_total_loss": mean}`` over the batches of all ranks."""
        model = model.module if hasattr(model, "module") else model
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        sums, count = {}, 0
        with preserved_rng(self.cuda), EventStorage(self.trainer.iter):
            for i, batch in enumerate(self.loader):
                if i == self.num_batches:
                    break
                loss_dict = model(batch)
                for k, v in loss_dict.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
        gathered = comm.all_gather((sums, count))
        total = sum(c for _, c in gathered)
        means = {
            f"val_{k}": sum(s.get(k, 0.0) for s, _ in gathered) / total
            for k in gathered[0][0]
            if total
        }
        means["val_total_loss"] = sum(means.values())
        return means
