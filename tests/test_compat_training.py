"""fpt.compat.map_dataset and fpt.compat.lr_scheduler: detectron2's training loop on Python 3.11
and torch 2 — a mapper may skip items, and a torch LR scheduler survives a resume."""

import itertools
import logging
import os
import random

import numpy as np
import torch
from PIL import Image

import fpt  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_train_loader
from detectron2.data.common import MapDataset
from detectron2.engine import HookBase, SimpleTrainer, hooks

from fpt.data import RobustDatasetMapper


class MeanModel(torch.nn.Module):
    """Fits one scalar to the mean pixel of each image; records the images it saw."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, batch):
        self.seen += [d.get("image_id") for d in batch]
        if "image" not in batch[0]:
            return {"loss": (self.w - 1.0) ** 2}
        x = torch.stack([d["image"].float().mean() / 255 for d in batch])
        return {"loss": ((x - self.w) ** 2).mean()}


def test_map_dataset_retries_like_python_310():
    """A mapper returning None: MapDataset draws another index, the one Python 3.10 drew."""
    mapped = MapDataset(list(range(10)), lambda x: None if x % 3 == 0 else x)
    expected = random.Random(42).sample(tuple(set(range(10)) - {3}), k=1)[0]
    got = mapped[3]
    if expected % 3:  # the first retry succeeded
        assert got == expected
    assert got % 3 != 0


def test_mapper_that_skips_unreadable_images_trains(tmp_path, caplog):
    dicts = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        if i in (1, 4):
            path.write_bytes(b"not an image")  # RobustDatasetMapper returns None for these
        else:
            Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(path)
        dicts.append(
            {"file_name": str(path), "image_id": i, "height": 24, "width": 32, "annotations": []}
        )
    mapper = RobustDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    loader = build_detection_train_loader(dicts, mapper=mapper, total_batch_size=2, num_workers=0)
    model = MeanModel()
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.5))
    with caplog.at_level(logging.WARNING, logger="fpt.data.mapper"):
        trainer.train(0, 8)
    assert len(model.seen) == 16 and set(model.seen) <= {0, 2, 3, 5}
    assert "Skipping a training image" in caplog.text
    assert 0.1 < model.w.item() < 0.8  # it trained: w moved towards the mean pixel


class RecordLR(HookBase):
    def __init__(self, optimizer, lrs):
        self.optimizer, self.lrs = optimizer, lrs

    def before_step(self):
        self.lrs[self.trainer.iter] = self.optimizer.param_groups[0]["lr"]


def _trainer(lrs, save_dir):
    """A trainer with a torch StepLR, checkpointing every 5 iterations as DefaultTrainer does."""
    os.makedirs(save_dir, exist_ok=True)
    model = MeanModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    trainer = SimpleTrainer(model, itertools.repeat([{"image_id": 0}]), optimizer)
    checkpointer = DetectionCheckpointer(model, save_dir, optimizer=optimizer, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.LRScheduler(optimizer, scheduler),
            RecordLR(optimizer, lrs),
            hooks.PeriodicCheckpointer(checkpointer, period=5, max_iter=10),
        ]
    )
    return trainer, checkpointer


def test_torch_lr_scheduler_resumes(tmp_path):
    """A torch StepLR in detectron2's LRScheduler hook: resume continues its schedule."""
    full = {}
    _trainer(full, str(tmp_path / "full"))[0].train(0, 10)
    assert full[9] == 1.0 * 0.5**3

    interrupted = {}
    _trainer(interrupted, str(tmp_path / "run"))[0].train(0, 7)  # stopped after iteration 6
    resumed = {}
    trainer, checkpointer = _trainer(resumed, str(tmp_path / "run"))
    checkpointer.load(str(tmp_path / "run" / "model_0000004.pth"))  # as --resume loads it
    assert trainer.iter == 4
    trainer.train(trainer.iter + 1, 10)
    assert sorted(resumed) == list(range(5, 10))
    assert {**interrupted, **resumed} == full
