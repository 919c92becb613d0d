"""A toy LazyConfig for the ``fpt.engine.Trainer``: a few-parameter model (conv, BatchNorm or
SyncBatchNorm, dropout: torch's RNG), a data loader that augments with Python's and numpy's RNGs
as detectron2's mappers do, and an evaluator, so that the trainer's DDP, EMA, SyncBN and resume
paths run in seconds.

Importable as ``engine_toy`` (pytest puts tests/ on sys.path, and spawned workers inherit it).
"""

import json
import os
import random

import numpy as np
import torch
from fvcore.common.param_scheduler import CosineParamScheduler
from omegaconf import OmegaConf
from torch import nn

import fpt  # noqa: F401  (the compat layer, in spawned workers too)
from detectron2.config import LazyCall as L
from detectron2.evaluation import DatasetEvaluator
from detectron2.solver import get_default_optimizer_params
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from fpt.config import fill_train_defaults, get_common_train


class ToyModel(nn.Module):
    """Regresses each image's target from its pixels. Training returns a loss dict and records
    ``(iteration, loss)`` in ``self.losses``; evaluation returns ``[{"pred": ...}, ...]``."""

    def __init__(self, sync_bn=False, dropout=0.2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.norm = (nn.SyncBatchNorm if sync_bn else nn.BatchNorm2d)(4)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4, 1)
        self.losses = []

    def forward(self, batched_inputs):
        x = torch.stack([d["image"] for d in batched_inputs])
        y = self.head(self.dropout(self.norm(self.conv(x)).mean(dim=(2, 3)))).squeeze(1)
        if not self.training:
            return [{"pred": p} for p in y]
        target = torch.tensor([d["target"] for d in batched_inputs])
        loss = ((y - target) ** 2).mean()
        self.losses.append((get_event_storage().iter, loss.item()))
        return {"loss_toy": loss}


def toy_dataset(n=16):
    """``n`` dicts with a 3x4x4 image and a target; ``file_name`` is an existing file."""
    g = torch.Generator().manual_seed(0)
    return [
        {
            "file_name": os.path.abspath(__file__),
            "image": torch.randn(3, 4, 4, generator=g),
            "target": float(i % 4),
        }
        for i in range(n)
    ]


class ToyLoader:
    """Batches of ``total_batch_size / world size`` items in ``sampler`` order, each augmented
    with noise from Python's and numpy's global generators. Starting it draws from torch's, as a
    torch ``DataLoader`` does for its workers' base seed."""

    def __init__(self, dataset, total_batch_size, sampler):
        self.dataset, self.sampler = dataset, sampler
        self.batch_size = total_batch_size // comm.get_world_size()

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # the base seed a DataLoader draws
        batch = []
        for index in self.sampler:
            item = dict(self.dataset[index])
            noise = random.random() + float(np.random.rand())
            item["image"] = item["image"] + 0.1 * noise
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []


def toy_test_loader(dataset):
    return [[d] for d in dataset]


class ToyEvaluator(DatasetEvaluator):
    """``{"toy": {"score": -mean squared error}}`` over all ranks' predictions."""

    def __init__(self, output_dir=None):
        self.errors = []

    def reset(self):
        self.errors = []

    def process(self, inputs, outputs):
        for i, o in zip(inputs, outputs):
            self.errors.append(float((o["pred"] - i["target"]) ** 2))

    def evaluate(self):
        errors = sum(comm.gather(self.errors), [])
        if not comm.is_main_process():
            return None
        return {"toy": {"score": -sum(errors) / len(errors)}}


def toy_config(output_dir, max_iter=6, period=3, seed=0, sync_bn=False, **train):
    """The toy LazyConfig; ``train`` sets more ``train.*`` fields (e.g. ``eval_period=2``)."""
    node = get_common_train()
    fill_train_defaults(node)
    node.update(
        output_dir=str(output_dir),
        max_iter=max_iter,
        eval_period=0,
        log_period=1,
        device="cpu",
        seed=seed,
        plot=False,
    )
    node["checkpointer"]["period"] = period
    for key, value in train.items():  # e.g. "ema.enabled": True
        target = node
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        assert last in target, key
        target[last] = value
    cfg = OmegaConf.create(flags={"allow_objects": True})
    cfg.model = L(ToyModel)(sync_bn=sync_bn)
    cfg.optimizer = L(torch.optim.SGD)(params=L(get_default_optimizer_params)(), lr=0.1)
    cfg.lr_multiplier = L(CosineParamScheduler)(start_value=1.0, end_value=0.1)
    cfg.dataloader = OmegaConf.create(flags={"allow_objects": True})
    cfg.dataloader.train = L(ToyLoader)(dataset=L(toy_dataset)(n=16), total_batch_size=4)
    cfg.dataloader.test = L(toy_test_loader)(dataset=L(toy_dataset)(n=4))
    cfg.dataloader.evaluator = L(ToyEvaluator)()
    cfg.train = node
    return cfg


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def train_worker(output_dir, resume, options, fail_message=None):
    """A ``launch`` worker: train the toy config, then write ``report_rank<N>.json``: the final
    weights digest, this rank's losses, the process groups' timeouts and whether the optimizer
    holds the model's parameters. With ``fail_message``, rank 1 then raises
    ``OSError(fail_message)``."""
    from detectron2.utils.logger import setup_logger

    from fpt.engine import Trainer
    from fpt.engine.trainer import weights_digest

    torch.set_num_threads(1)
    setup_logger(output_dir, distributed_rank=comm.get_rank(), name="fpt")
    trainer = Trainer(toy_config(output_dir, **options))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    model = unwrap(trainer.model)
    params = {id(p) for p in model.parameters()}
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    groups = {
        "world": torch.distributed.group.WORLD,
        "local": comm._LOCAL_PROCESS_GROUP,
        "gloo": comm._get_global_gloo_group(),
    }
    report = {
        "digest": weights_digest(model),
        "losses": model.losses,
        "norm": type(model.norm).__name__,
        "optimizer_holds_the_parameters": params == in_optimizer,
        "timeouts": {k: group_timeout(g) for k, g in groups.items()},
    }
    with open(os.path.join(output_dir, f"report_rank{comm.get_rank()}.json"), "w") as f:
        json.dump(report, f)
    if fail_message and comm.get_rank() == 1:
        _read_remote_dataset(fail_message)


def group_timeout(group):
    """A gloo process group's timeout, in seconds."""
    return group._get_backend(torch.device("cpu")).options._timeout.total_seconds()


def _read_remote_dataset(message):
    raise OSError(message)
