"""Extra normalization names for detectron2's ``get_norm`` ("LN", ...).

What: wrap ``detectron2.layers.get_norm`` so that names registered with :func:`register_norm`
are understood (everything else goes to the original), and point every already-imported
detectron2 module's ``get_norm`` at the wrapper.
Why: detectron2 0.6's ``get_norm`` builds its name table inside the function (layers/
batch_norm.py:136), so ViTDet's ``conv_norm="LN"`` heads cannot be expressed; newer detectron2
has "LN". Norm names are how configs talk to the heads (``FastRCNNConvFCHead(conv_norm=...)``).
When it can go: when detectron2 is >= 0.7 and has every name registered here.
"""

from ._repoint import repoint

_EXTRA_NORMS = {}
_original_get_norm = None


def register_norm(name, factory):
    """Make ``get_norm(name, C)`` return ``factory(C)``."""
    _EXTRA_NORMS[name] = factory


def get_norm(norm, out_channels):
    """detectron2's ``get_norm``, plus the names registered with :func:`register_norm`."""
    if isinstance(norm, str) and norm in _EXTRA_NORMS:
        return _EXTRA_NORMS[norm](out_channels)
    return _original_get_norm(norm, out_channels)


def apply():
    global _original_get_norm
    import detectron2.layers.batch_norm as batch_norm

    if _original_get_norm is None:
        _original_get_norm = batch_norm.get_norm
    repoint(_original_get_norm, get_norm)
