"""Warnings that detectron2 0.6 and fvcore raise on every normal run on torch 2 / numpy 2.

What: :func:`quiet_imports` hides ``torch.jit.script``'s deprecation warning while detectron2 and
fvcore are imported (they script a few helpers at import time: fvcore/nn/focal_loss.py,
detectron2/modeling/box_regression.py, structures/boxes.py, ...). Nothing is filtered globally:
the same warning from the user's own code still shows.
Why: torch 2.10 deprecated ``torch.jit.script`` (a ``DeprecationWarning`` up to 2.13, a
``FutureWarning`` from 2.14); the scripted helpers still work.
When it can go: when fvcore/detectron2 stop scripting at import time.
"""

import contextlib
import warnings

JIT_DEPRECATION = r"`torch\.jit\.script` is deprecated"
JIT_DEPRECATION_CATEGORIES = (DeprecationWarning, FutureWarning)  # torch <= 2.13, >= 2.14


@contextlib.contextmanager
def quiet_imports():
    with warnings.catch_warnings():
        for category in JIT_DEPRECATION_CATEGORIES:
            warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=category)
        yield
