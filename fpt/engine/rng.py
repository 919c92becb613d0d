"""The random number generators of one process, as checkpoint data.

A resumed run draws the same augmentations, RoI samples and dropout masks as an uninterrupted
one only if every rank gets its own generators back: Python's ``random``, numpy's global
generator, torch's CPU generator and, on CUDA, the current device's generator. The state is
tensors and plain containers only, so checkpoints stay loadable with
``torch.load(weights_only=True)``.
"""

import contextlib
import random

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "preserved_rng"]


def get_rng_state(cuda=False):
    """This process's generator states (``cuda``: also the current CUDA device's)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned (the CUDA state onto the current device)."""
    random.setstate(_as_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value):
    """``random.setstate`` wants tuples; a checkpoint round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def preserved_rng(cuda=False):
    """Whatever runs inside (an evaluation) leaves the generators as it found them."""
    state = get_rng_state(cuda)
    try:
        yield
    finally:
        set_rng_state(state)
