"""Checkpoints written atomically.

fvcore's ``Checkpointer.save`` streams ``torch.save`` into the final file name and then rewrites
``last_checkpoint``: a run killed mid-write leaves a truncated ``.pth`` that ``--resume`` then
fails to load. :class:`AtomicCheckpointer` writes both to a temporary file in the same folder,
flushes it to disk and ``os.replace``-s it into place, so at any moment ``last_checkpoint`` names a
complete file. Best-model snapshots (``model_best``) do not move ``last_checkpoint``, so
``--resume`` always continues from the latest iteration.

With weight EMA (``ema=``), a checkpoint's ``model`` holds the EMA weights (the ones evaluated
during training, so ``model_best``/``model_final`` give the metrics reported for them, and
``train.init_checkpoint``/the demo load them) and ``raw_model`` the training weights, which
``--resume`` puts back into the model while the EMA continues from ``model``.
"""

import os
import tempfile

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "atomic_write"]


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file, fsync it, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` is atomic (same arguments, plus ``untagged``:
    name prefixes whose saves leave ``last_checkpoint`` alone, and ``ema``: an
    :class:`~fpt.engine.hooks.EMAHook` whose weights are saved as ``model``)."""

    def __init__(self, model, save_dir="", *, untagged=("model_best",), ema=None, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.untagged = tuple(untagged)
        self.ema = ema
        self._resuming = False

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        if self.ema is not None:
            data = {"model": self.ema.model_state_dict(), "raw_model": self.model.state_dict()}
        else:
            data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(save_file, lambda f: torch.save(data, f))
        if not name.startswith(self.untagged):
            self.tag_last_checkpoint(basename)

    def load(self, path, checkpointables=None):
        """As ``DetectionCheckpointer.load``; loading the trainer's state too (``--resume``)
        loads ``raw_model`` (if saved) into the model and ``model`` into the EMA."""
        self._resuming = "trainer" in self.checkpointables and (
            checkpointables is None or "trainer" in checkpointables
        )
        try:
            return super().load(path, checkpointables)
        finally:
            self._resuming = False

    def _load_model(self, checkpoint):
        if self._resuming and "raw_model" in checkpoint:
            averaged = checkpoint["model"]
            checkpoint["model"] = checkpoint.pop("raw_model")
            if self.ema is not None:
                self.ema.load_state_dict(averaged)
        return super()._load_model(checkpoint)

    def tag_last_checkpoint(self, last_filename_basename):
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))
