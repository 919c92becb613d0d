"""detectron2 main's ViT, MViT and Swin import ``timm.models.layers``, which current timm deprecates.

What: the first import of ``timm.models.layers`` (whoever asks for it) runs with timm's "Importing
from timm.models.layers is deprecated" ``FutureWarning`` ignored; nothing else is filtered, and
nothing is imported ahead of time (a one-shot import hook on ``sys.meta_path``, which removes
itself when used). Installed only where the installed detectron2 has these backbones
(``detectron2.modeling.backbone.vit`` exists: main, not 0.6).
Why: detectron2 main imports it inside ``Block.__init__`` (modeling/backbone/vit.py:191,
mvit.py:237, swin.py:232), so building upstream's ViTDet configs warned once per process, and
failed under ``-W error``.
When it can go: when detectron2 imports from ``timm.layers``.
"""

import importlib.abc
import importlib.util
import sys
import warnings

DEPRECATED_MODULE = "timm.models.layers"
DEPRECATION = r"Importing from timm\.models\.layers is deprecated"


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATION, category=FutureWarning)
            self.loader.exec_module(module)


class QuietDeprecatedImport(importlib.abc.MetaPathFinder):
    """Finds ``timm.models.layers`` once, with a loader that ignores its deprecation warning."""

    def find_spec(self, name, path, target=None):
        if name != DEPRECATED_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def apply():
    if DEPRECATED_MODULE in sys.modules:
        return
    if importlib.util.find_spec("detectron2.modeling.backbone.vit") is None:
        return
    if not any(isinstance(f, QuietDeprecatedImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietDeprecatedImport())
