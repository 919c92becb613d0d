"""Training hooks beyond detectron2's: weight EMA and the end-of-training plot."""

import contextlib
import logging
import os

import torch

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["EMAHook", "PlotHook"]

logger = logging.getLogger(__name__)


class EMAHook(HookBase):
    """Exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * w`` after
    every step (floating-point parameters and buffers). Its state is part of the checkpoint;
    :meth:`swapped` puts the EMA weights into the model for evaluation."""

    def __init__(self, model, decay=0.9998):
        self.model = model.module if hasattr(model, "module") else model
        self.decay = decay
        self.ema = {k: v.detach().clone() for k, v in self._tensors().items()}

    def _tensors(self):
        return {k: v for k, v in self.model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def after_step(self):
        for k, v in self._tensors().items():
            self.ema[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def swapped(self):
        """Evaluate with the EMA weights inside this context; the training weights come back."""
        current = {k: v.detach().clone() for k, v in self._tensors().items()}
        self.model.load_state_dict(self.ema, strict=False)
        try:
            yield
        finally:
            self.model.load_state_dict(current, strict=False)

    def state_dict(self):
        return {k: v.cpu() for k, v in self.ema.items()}

    def load_state_dict(self, state_dict):
        for k, v in state_dict.items():
            if k in self.ema:
                self.ema[k].copy_(v)


class PlotHook(HookBase):
    """After training (main process), plot ``metrics.json`` into ``metrics.png``."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def after_train(self):
        if not comm.is_main_process():
            return
        from fpt.evaluation.plots import plot_metrics

        metrics = os.path.join(self.output_dir, "metrics.json")
        if os.path.isfile(metrics):
            path = plot_metrics(metrics, os.path.join(self.output_dir, "metrics.png"))
            logger.info(f"Loss and AP curves: {path}")
