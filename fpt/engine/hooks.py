"""Training hooks beyond detectron2's: weight EMA, per-rank resume state, the end-of-training
plot, the LR scheduler under fp16 loss scaling."""

import contextlib
import logging
import os
import time
import warnings

import torch

from detectron2.engine import HookBase
from detectron2.engine import hooks as d2_hooks
from detectron2.utils import comm

from fpt.utils.compile import cache_hits, dynamo_counts

__all__ = ["CompileHook", "EMAHook", "LRScheduler", "PlotHook", "RankStateHook", "own_rank_state"]

logger = logging.getLogger(__name__)


class EMAHook(HookBase):
    """Exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * w`` after
    every step (floating-point parameters and buffers); :meth:`swapped` puts the EMA weights into
    the model for evaluation.

    The EMA starts from the model's weights when the hook is made; the trainer calls
    :meth:`reset` once ``train.init_checkpoint`` is loaded, so that it starts from the loaded
    weights. The checkpointer saves the EMA weights as the checkpoint's ``model`` (the weights
    that were evaluated) and restores them on resume (:class:`AtomicCheckpointer`); ``restored``
    says whether that happened.
    """

    def __init__(self, model, decay=0.9998):
        self.model = model.module if hasattr(model, "module") else model
        self.decay = decay
        self.ema = {}
        self.reset()

    def _tensors(self):
        return {k: v for k, v in self.model.state_dict().items() if v.dtype.is_floating_point}

    def reset(self):
        """Start the average from the model's current weights."""
        self.ema = {k: v.detach().clone() for k, v in self._tensors().items()}
        self.restored = False

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

    def model_state_dict(self):
        """The model's state dict with the EMA weights in place of the training ones."""
        state = self.model.state_dict()
        state.update(self.ema)
        return state

    def load_state_dict(self, state_dict):
        """Take the EMA weights from a state dict (a checkpoint's ``model``; older checkpoints
        kept them in the trainer's hook states, which also land here)."""
        for k, v in state_dict.items():
            if k in self.ema:
                self.ema[k].copy_(v)
        self.restored = True


class LRScheduler(d2_hooks.LRScheduler):
    """detectron2's LR-scheduler hook (one scheduler step per iteration), quiet about the steps
    fp16's ``GradScaler`` skips.

    The scaler skips the optimizer step of an iteration whose scaled gradients overflow: at its
    first scale (2**16) that is often iteration 0. The scheduler still steps, so that the LR
    follows the iteration count, and torch warns that ``lr_scheduler.step()`` came before
    ``optimizer.step()``: a case its documentation calls harmless. That one warning is silenced
    while the trainer says no optimizer step has been taken yet (``optimizer_never_stepped``);
    in any other case it is shown.
    """

    def after_step(self):
        if not getattr(self.trainer, "optimizer_never_stepped", False):
            return super().after_step()
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`",
                category=UserWarning,
            )
            super().after_step()


class RankStateHook(HookBase):
    """On the iterations the checkpointer saves at (every ``period`` and the last one), gather
    each rank's resume state (``trainer.rank_state()``: its RNGs and data sampler) to every rank,
    just before the checkpoint is written; the trainer saves the list. A collective: registered
    on every rank, right before the ``PeriodicCheckpointer``."""

    def __init__(self, period):
        self.period = period

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it >= self.trainer.max_iter - 1:
            self.trainer.rank_states = (it, comm.all_gather(self.trainer.rank_state()))


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


def own_rank_state(state_dict):
    """This rank's entry of a checkpoint's per-rank resume states (what :class:`RankStateHook`
    gathered; None when it has none for this world size). Checkpoints of older versions held one
    RNG state, for one process."""
    ranks = state_dict.get("ranks")
    if ranks is not None and len(ranks) == comm.get_world_size():
        return ranks[comm.get_rank()]
    if ranks is not None:
        logger.info(
            f"The checkpoint was written by {len(ranks)} processes, not "
            f"{comm.get_world_size()}: random number generators are not restored."
        )
        return None
    if "rng" in state_dict and comm.get_world_size() == 1:
        return {"rng": state_dict["rng"]}
    return None


class CompileHook(HookBase):
    """What compilation cost and whether it settled, logged once each: after the first
    iteration, its time (mostly compilation), the graphs and graph breaks; ``settle`` iterations
    later (or at the end), the recompiles since. More than torch's limit per part means the part
    runs eager again: said in one warning line."""

    def __init__(self, parts, settle=20):
        self.parts = parts
        self.settle = settle
        self.first_seconds = None
        self._first = None  # (iteration, graphs) after the first iteration
        self._settled = False

    def before_step(self):
        if self._first is None:
            self._start = time.perf_counter()

    def after_step(self):
        graphs, breaks = dynamo_counts()
        if self._first is None:
            self.first_seconds = time.perf_counter() - self._start
            self._first = (self.trainer.iter, graphs)
            hits, misses = cache_hits()
            logger.info(
                f"train.compile: first iteration {self.first_seconds:.1f} s (compilation "
                f"included): {graphs} graphs, {breaks} graph breaks; compiled-code cache "
                f"{hits} hits, {misses} misses"
            )
        elif self.trainer.iter - self._first[0] == self.settle:
            self._report(graphs, breaks)

    def after_train(self):
        if self._first is not None and not self._settled:
            self._report(*dynamo_counts())

    def _report(self, graphs, breaks):
        self._settled = True
        start_iter, start_graphs = self._first
        recompiles = graphs - start_graphs
        limit = torch._dynamo.config.cache_size_limit
        span = f"iterations {start_iter + 1}-{self.trainer.iter}"
        if recompiles >= limit * len(self.parts):
            logger.warning(
                f"train.compile: {recompiles} recompiles in {span} (input shapes vary more than "
                f"automatic dynamic shapes absorb): past {limit} recompiles of a part, torch "
                f"runs it eager again ({', '.join(self.parts)})"
            )
        else:
            logger.info(
                f"train.compile: {recompiles} recompiles in {span}; {graphs} graphs, "
                f"{breaks} graph breaks in all"
            )
