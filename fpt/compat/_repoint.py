"""Re-point names that detectron2 modules imported, for shims that replace an object."""

import sys


def repoint(original, replacement, prefix="detectron2"):
    """Make every module-level name of the imported ``prefix`` modules that *is* ``original``
    refer to ``replacement`` (``from x import f`` copies references, so patching ``x.f`` alone
    does not reach the modules that imported it)."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)
