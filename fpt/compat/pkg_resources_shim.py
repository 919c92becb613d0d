"""``pkg_resources`` is gone from current setuptools (81 deprecates it, 82 removes it).

What: import ``detectron2.model_zoo`` with a minimal stand-in module as ``pkg_resources`` that
provides the one function it uses, ``resource_filename``, on top of :mod:`importlib.resources`.
The stand-in is visible only during that import (a ``pkg_resources`` that was already imported
is put back after it), so other packages still see the real one, or that it is absent.
Why: detectron2/model_zoo/model_zoo.py:4 (0.6 and main) imports it, so with setuptools >= 82
``detectron2.model_zoo`` (and ``model_zoo.get_config``) fail to import, and with setuptools 81
the import warns ("pkg_resources is deprecated as an API") in every process.
When it can go: when detectron2 uses importlib.resources.
"""

import importlib
import importlib.resources
import os
import sys
import types


def resource_filename(package, resource):
    """Path of ``resource`` (a relative path) inside the installed ``package``."""
    return os.path.join(str(importlib.resources.files(package)), resource)


def apply():
    if "detectron2.model_zoo" in sys.modules:
        return
    stand_in = types.ModuleType("pkg_resources", "fpt.compat stand-in: resource_filename only")
    stand_in.resource_filename = resource_filename
    previous = sys.modules.get("pkg_resources")
    sys.modules["pkg_resources"] = stand_in
    try:
        importlib.import_module("detectron2.model_zoo")
    finally:
        if previous is None:
            del sys.modules["pkg_resources"]
        else:
            sys.modules["pkg_resources"] = previous
