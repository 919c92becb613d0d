"""A finder that makes ``import detectron2._C`` fail, or load with only some functions (for
tests/test_compat_c_ops.py, in-process and in a fresh interpreter)."""

import importlib.abc
import importlib.machinery
import types


class FakeCompiledModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a ``detectron2._C`` that fails to load, or loads with only some functions."""

    def __init__(self, functions=None):
        self.functions = functions

    def find_spec(self, name, path, target=None):
        if name == "detectron2._C":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        if self.functions is None:
            raise ImportError("_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")
        module = types.ModuleType(spec.name)
        for f in self.functions:
            setattr(module, f, lambda *a: None)
        return module

    def exec_module(self, module):
        pass
