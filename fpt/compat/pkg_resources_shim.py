"""``pkg_resources`` is gone from current setuptools (removed in setuptools 81).

What: when ``import pkg_resources`` fails, import ``detectron2.model_zoo`` with a minimal
stand-in module that provides the one function it uses, ``resource_filename``, on top of
:mod:`importlib.resources`. The stand-in is visible only during that import, so other packages
that probe for ``pkg_resources`` still see that it is absent.
Why: detectron2/model_zoo/model_zoo.py:4 imports it, so ``detectron2.model_zoo`` (and
``model_zoo.get_config``) fail to import.
When it can go: when detectron2 is >= 0.7 (it uses importlib).
"""

import importlib
import importlib.resources
import importlib.util
import os
import sys
import types


def resource_filename(package, resource):
    """Path of ``resource`` (a relative path) inside the installed ``package``."""
    return os.path.join(str(importlib.resources.files(package)), resource)


def apply():
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    stand_in = types.ModuleType("pkg_resources", "fpt.compat stand-in: resource_filename only")
    stand_in.resource_filename = resource_filename
    sys.modules["pkg_resources"] = stand_in
    try:
        importlib.import_module("detectron2.model_zoo")
    finally:
        del sys.modules["pkg_resources"]
