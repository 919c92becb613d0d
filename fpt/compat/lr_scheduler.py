"""Checkpoint torch's built-in LR schedulers in detectron2's ``LRScheduler`` hook.

What: ``detectron2.engine.hooks.LRScheduler.state_dict``/``load_state_dict`` also save and
restore schedulers derived from ``torch.optim.lr_scheduler.LRScheduler`` (``StepLR``,
``MultiStepLR``, ``OneCycleLR``, ``CosineAnnealingLR``, ...). Schedulers the hook handled
already (detectron2's own, ``LRMultiplier``) and ``ParamScheduler``s go through the original
methods unchanged.
Why: the hook checks ``isinstance(scheduler, torch.optim.lr_scheduler._LRScheduler)``
(engine/hooks.py:365,370); since torch 2.0 the built-in schedulers derive from ``LRScheduler``
and ``_LRScheduler`` is a deprecated subclass of it, so their state was silently left out of
checkpoints and ``--resume`` restarted their schedule from the beginning.
Steps aside where the hook's module checks against torch's ``LRScheduler`` itself (detectron2
main imports it there as ``_LRScheduler``).
When it can go: when detectron2 checks ``LRScheduler`` there (newer than 0.6).
"""

import functools
import logging

from torch.optim.lr_scheduler import LRScheduler as TorchLRScheduler
from torch.optim.lr_scheduler import _LRScheduler


def _missed(scheduler):
    """A torch scheduler that detectron2 0.6's isinstance check does not recognise."""
    return isinstance(scheduler, TorchLRScheduler) and not isinstance(scheduler, _LRScheduler)


def apply():
    from detectron2.engine import hooks

    hook = hooks.LRScheduler
    if getattr(hook.state_dict, "__fpt_patched__", False):
        return
    if getattr(hooks, "_LRScheduler", None) is TorchLRScheduler:  # main checks torch's base class
        return
    state_dict, load_state_dict = hook.state_dict, hook.load_state_dict

    @functools.wraps(state_dict)
    def patched_state_dict(self):
        if _missed(self.scheduler):
            return self.scheduler.state_dict()
        return state_dict(self)

    @functools.wraps(load_state_dict)
    def patched_load_state_dict(self, sd):
        if _missed(self.scheduler):
            logging.getLogger(hooks.__name__).info("Loading scheduler from state_dict ...")
            return self.scheduler.load_state_dict(sd)
        return load_state_dict(self, sd)

    patched_state_dict.__fpt_patched__ = True
    hook.state_dict = patched_state_dict
    hook.load_state_dict = patched_load_state_dict
