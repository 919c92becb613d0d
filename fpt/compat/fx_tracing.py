"""detectron2 main asks torch "is FX tracing?" with a function torch now warns about.

What: point ``detectron2.utils.tracing.is_fx_tracing_current`` at torch's
``torch.fx._symbolic_trace.is_fx_symbolic_tracing`` where both exist (main; torch >= 2.4): true
during ``torch.fx.symbolic_trace`` only, which is what detectron2 gates on (its legacy check
looks for symbolic tracing's patched ``Module.__call__``).
Why: ``ROIPooler.forward`` (modeling/poolers.py:223) calls ``is_fx_tracing()``, which calls
torch's ``is_fx_tracing``; torch logs "is_fx_tracing will return true for both fx.symbolic_trace
and torch.export ..." on the first call of every process (each DDP rank, each demo worker).
When it can go: when detectron2 calls ``is_fx_symbolic_tracing`` itself.
"""

import importlib
import importlib.util

from torch.fx import _symbolic_trace


def apply():
    if importlib.util.find_spec("detectron2.utils.tracing") is None:  # detectron2 0.6
        return
    tracing = importlib.import_module("detectron2.utils.tracing")
    symbolic = getattr(_symbolic_trace, "is_fx_symbolic_tracing", None)
    if symbolic is not None and hasattr(tracing, "is_fx_tracing_current"):
        tracing.is_fx_tracing_current = symbolic
