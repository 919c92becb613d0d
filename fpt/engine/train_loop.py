"""One training iteration: mixed precision, gradient accumulation and clipping, NaN/inf stop.

detectron2's ``AMPTrainer`` asserts CUDA and uses the deprecated ``torch.cuda.amp`` API; it has
no gradient accumulation or clipping. :class:`AccumulatingAMPTrainer` is a ``SimpleTrainer`` that
does all of it with ``torch.amp``: fp16 + ``GradScaler`` on CUDA, bf16 autocast (no scaler needed)
on CPU.

``AMPTrainer``, its name until this release, collided with detectron2's class of other behaviour:
it is still importable from here and from :mod:`fpt.engine` for one release, with a
``FutureWarning`` when used.
"""

import contextlib
import time
import warnings

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

from fpt.utils.text import first_line

from fpt.utils.compile import CompileError, is_compile_failure

__all__ = ["AccumulatingAMPTrainer", "NonFiniteLossError", "clip_gradients"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


def clip_gradients(parameters, clip_type="norm", clip_value=1.0, norm_type=2.0):
    """Clip gradients in place by total norm (``clip_type="norm"``) or by value (``"value"``).

    Returns the total gradient norm before clipping (a 0-dim tensor) for ``"norm"``, else None.
    """
    parameters = [p for p in parameters if p.grad is not None]
    if clip_type == "norm":
        return torch.nn.utils.clip_grad_norm_(parameters, clip_value, norm_type)
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(parameters, clip_value)
        return None
    raise ValueError(f"train.clip_gradients.clip_type must be 'norm' or 'value', got {clip_type!r}")


class AccumulatingAMPTrainer(SimpleTrainer):
    """``SimpleTrainer`` with AMP, ``iter_size`` gradient accumulation and gradient clipping.

    Each iteration takes ``iter_size`` batches from the loader, back-propagates ``loss /
    iter_size`` for each (DDP syncs gradients only on the last) and takes one optimizer step, so
    the effective batch is ``iter_size`` times the loader's.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        *,
        device="cpu",
        amp=False,
        iter_size=1,
        clip_gradients=None,
        compiled_parts=(),
    ):
        """
        Args:
            model, data_loader, optimizer: as in ``SimpleTrainer``.
            device (str): "cpu" or "cuda"; picks the autocast type and whether a scaler is used.
            amp (bool): mixed precision: fp16 with ``GradScaler`` on CUDA, bf16 on CPU.
            iter_size (int): batches accumulated per optimizer step.
            clip_gradients (dict or None): ``clip_gradients(**...)`` arguments when enabled.
            compiled_parts (list[str]): the model's parts under ``torch.compile``, named when
                compiling them fails.
        """
        if iter_size < 1:
            raise ValueError(f"train.iter_size must be >= 1, got {iter_size}")
        # SimpleTrainer.__init__ sets what its methods read (detectron2 main: the metric
        # gathering period, the metric-writing executor that after_train shuts down). detectron2
        # 0.6's also calls iter(data_loader), which would start the loader's workers before a
        # resumed sampler knows where to start: it gets an empty iterable, and the real loader
        # is iterated lazily (_next_batch).
        super().__init__(model, (), optimizer)
        self.data_loader = data_loader
        self._iterator = None
        self.device_type = torch.device(device).type
        self.amp = amp
        self.amp_dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        self.grad_scaler = (
            torch.amp.GradScaler(self.device_type) if (amp and self.device_type == "cuda") else None
        )
        self.iter_size = iter_size
        self.clip = dict(clip_gradients) if clip_gradients else None
        self.compiled_parts = list(compiled_parts)
        # until the first optimizer step that fp16 loss scaling does not skip (hooks.LRScheduler)
        self.optimizer_never_stepped = True

    def _next_batch(self):
        if self._iterator is None:
            # Starting a torch DataLoader draws its workers' base seed from the global torch
            # RNG. Keep that draw out of the training RNG stream, so that a run resumed from a
            # checkpoint (which restores the RNGs, then starts its loader) stays bit-identical
            # to an uninterrupted one.
            state = torch.get_rng_state()
            self._iterator = iter(self.data_loader)
            batch = next(self._iterator)
            torch.set_rng_state(state)
            return batch
        return next(self._iterator)

    def _forward(self, data):
        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp):
            try:
                loss_dict = self.model(data)
            except FloatingPointError as e:  # e.g. detectron2's check of NaN proposals
                raise NonFiniteLossError(
                    f"Training diverged at iteration {self.iter}: {e}"
                ) from None
            except Exception as e:
                if self.compiled_parts and is_compile_failure(e):
                    parts = ", ".join(f"model.{p}" for p in self.compiled_parts)
                    raise CompileError(
                        f"train.compile: compiling {parts} failed at iteration {self.iter}: "
                        f"{type(e).__name__}: {first_line(e)}; set train.compile.enabled=False"
                    ) from None
                raise
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        return loss_dict

    def _check_finite(self, loss_dict):
        """Raise :class:`NonFiniteLossError` on every rank if any rank's loss is not finite
        (``loss_dict``: this iteration's losses, averaged over its micro-batches)."""
        bad = [k for k, v in loss_dict.items() if not torch.isfinite(v.detach()).all()]
        flag = torch.tensor([float(len(bad))], device=next(iter(loss_dict.values())).device)
        if comm.get_world_size() > 1:
            dist.all_reduce(flag)
        if flag.item() > 0:
            values = {k: float(v.detach()) for k, v in loss_dict.items()}
            where = f" (non-finite on this rank: {', '.join(bad)})" if bad else " (on another rank)"
            raise NonFiniteLossError(
                f"Loss became NaN or infinite at iteration {self.iter}{where}; losses: {values}"
            )

    def run_step(self):
        assert self.model.training, "[AccumulatingAMPTrainer] model was changed to eval mode!"
        self.optimizer.zero_grad()
        data_time, totals = 0.0, {}
        for micro in range(self.iter_size):
            start = time.perf_counter()
            data = self._next_batch()
            data_time += time.perf_counter() - start
            last = micro == self.iter_size - 1
            sync = (
                contextlib.nullcontext()
                if last or not isinstance(self.model, DistributedDataParallel)
                else self.model.no_sync()
            )
            with sync:
                loss_dict = self._forward(data)
                loss = sum(loss_dict.values()) / self.iter_size
                (self.grad_scaler.scale(loss) if self.grad_scaler else loss).backward()
            for k, v in loss_dict.items():
                totals[k] = totals.get(k, 0.0) + v.detach().float() / self.iter_size
        # once per iteration (one device sync), before any step: a non-finite micro-batch loss
        # makes its total non-finite
        self._check_finite(totals)
        if hasattr(self, "after_backward"):  # detectron2 main: hooks' after_backward
            self.after_backward()
        self._write_metrics(totals, data_time)
        if self.clip:
            if self.grad_scaler:
                self.grad_scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            clip_gradients(params, **self.clip)
        if self.grad_scaler:
            if self.optimizer_never_stepped:
                scale = self.grad_scaler.get_scale()  # a sync, only until the first real step
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
            if self.optimizer_never_stepped:  # the scale drops exactly when the step was skipped
                self.optimizer_never_stepped = self.grad_scaler.get_scale() < scale
        else:
            self.optimizer.step()
            self.optimizer_never_stepped = False

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def renamed_amp_trainer():
    """:class:`AccumulatingAMPTrainer`, asked for by its previous name ``AMPTrainer`` (a
    ``FutureWarning`` pointing at the caller's line; the name goes in the next release)."""
    warnings.warn(
        "fpt.engine.AMPTrainer is renamed AccumulatingAMPTrainer (detectron2's AMPTrainer is "
        "another class); the old name goes in the next release",
        FutureWarning,
        stacklevel=3,
    )
    return AccumulatingAMPTrainer


def __getattr__(name):  # the previous name, for one release
    if name == "AMPTrainer":
        return renamed_amp_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
