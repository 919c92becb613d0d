"""The ``lvis`` package (LVIS API 0.5.3: detectron2's ``LVISEvaluator`` and LVIS loader) on
numpy 2 and Python 3.11+, without its import-time logging set-up.

What: ``lvis.eval`` sees, as its module-global ``np``, the numpy stand-in of
:mod:`.numpy_aliases` (numpy plus the removed ``np.float``; numpy itself is not changed). The
``logging.basicConfig`` that ``import lvis`` runs is undone: the root logger keeps the handlers
and level it had. The loggers of ``lvis`` and of detectron2's ``LVISEvaluator`` get
``warn = warning`` (no other logger changes).
Why: ``LVISEval.accumulate`` calls ``.astype(dtype=np.float)`` (lvis/eval.py:361-362), an
``AttributeError`` on numpy >= 1.24, so every LVIS evaluation failed after computing all
matches. ``import lvis`` adds a WARN-level stderr handler to the root logger (lvis/__init__.py)
when the root logger has none yet, so the warnings of every library that propagates to the root
logger (``py.warnings`` included) would be printed by a handler nobody asked for. Both log with
``Logger.warn`` (lvis/results.py:34 on every evaluation; "No predictions from the model!",
detectron2/evaluation/lvis_evaluation.py:353), deprecated since Python 3.3 (a
DeprecationWarning on 3.11) and removed in 3.13.
How it decides: only when ``lvis`` is installed (it is imported here, with the
``matplotlib.pyplot`` that ``lvis.vis`` imports: 0.1 s); the alias only while numpy lacks
``np.float``.
When it can go: when the ``lvis`` package has a release without ``np.float``,
``logging.basicConfig`` at import and ``Logger.warn`` (0.5.3, of 2020, is the latest), and
detectron2's ``LVISEvaluator`` logs with ``warning``.
"""

import importlib.util
import logging

import numpy as np

from .numpy_aliases import numpy_with_aliases

_LOGGERS = (
    "lvis.eval",
    "lvis.lvis",
    "lvis.results",
    "lvis.vis",
    "detectron2.evaluation.lvis_evaluation",
)


def apply():
    if importlib.util.find_spec("lvis") is None:
        return
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import lvis.eval
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    if lvis.eval.np is np and "float" not in np.__dict__:
        lvis.eval.np = numpy_with_aliases
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.warn = logger.warning
