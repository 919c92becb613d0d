"""numpy 2 removed the deprecated aliases ``np.int``, ``np.float``, ``np.str``, ``np.object``.

What: the detectron2 modules that use them see, as their module-global ``np``, a stand-in for
numpy that has the aliases (as the builtins they always aliased) and forwards every other name
to numpy itself. numpy is not changed: ``numpy.int`` still raises ``AttributeError`` in every
other module, the user's included.
Scope: only the modules in ``_USERS`` (found with ``grep -E "np\\.(int|float|str|object|complex)\\b"``
over detectron2 0.6; ``np.bool`` exists again in numpy 2). A detectron2 module outside this list
that used an alias would fail with numpy's own AttributeError.
Why: detectron2 0.6 uses them (evaluation/sem_seg_evaluation.py:90,130-135,
data/datasets/pascal_voc.py:35, data/build.py:171). In data/build.py:171 the use sits inside a
``try/except``, so without the alias the class histogram and the category-id check are silently
skipped.
When it can go: when detectron2 is >= 0.7.
"""

import builtins
import importlib
import types

import numpy as np

_ALIASES = ("int", "float", "complex", "object", "str")
_USERS = (
    "detectron2.data.build",
    "detectron2.data.datasets.pascal_voc",
    "detectron2.evaluation.sem_seg_evaluation",
)


class _NumpyWithAliases(types.ModuleType):
    """numpy, plus the removed aliases (module attributes first, then numpy's)."""

    def __getattr__(self, name):
        return getattr(np, name)

    def __dir__(self):
        return sorted(set(dir(np)) | set(_ALIASES))


numpy_with_aliases = _NumpyWithAliases("numpy", np.__doc__)
for _name in _ALIASES:
    if _name not in np.__dict__:  # getattr would warn or raise for expired aliases
        setattr(numpy_with_aliases, _name, getattr(builtins, _name))


def apply():
    for name in _USERS:
        module = importlib.import_module(name)
        if module.np is np:
            module.np = numpy_with_aliases
