"""Extra normalization names for detectron2's ``get_norm`` ("LN", ...).

What: wrap ``detectron2.layers.get_norm`` so that names registered with :func:`register_norm`
are understood where detectron2's own ``get_norm`` does not know them (everything else, and
every name it knows, goes to the original), and point every already-imported detectron2
module's ``get_norm`` at the wrapper. Whether detectron2 knows a name is asked once per name, by
calling its ``get_norm(name, 1)``.
Why: detectron2 0.6's ``get_norm`` builds its name table inside the function (layers/
batch_norm.py:136), so ViTDet's ``conv_norm="LN"`` heads cannot be expressed. detectron2 main has
"LN" (its ``detectron2.layers.LayerNorm``: the same channels-first LayerNorm, eps 1e-6, same
parameter names), and then its own is used. Norm names are how configs talk to the heads
(``FastRCNNConvFCHead(conv_norm=...)``).
When it can go: when detectron2 is >= 0.7 and has every name registered here.
"""

from ._repoint import repoint

_EXTRA_NORMS = {}
_KNOWN_TO_DETECTRON2 = {}  # name -> whether detectron2's own get_norm builds it
_original_get_norm = None


def register_norm(name, factory):
    """Make ``get_norm(name, C)`` return ``factory(C)`` where detectron2 has no ``name``."""
    _EXTRA_NORMS[name] = factory


def _detectron2_knows(name):
    if name not in _KNOWN_TO_DETECTRON2:
        try:
            _original_get_norm(name, 1)
            _KNOWN_TO_DETECTRON2[name] = True
        except KeyError:  # 0.6 and main: an unknown name fails the dict lookup
            _KNOWN_TO_DETECTRON2[name] = False
    return _KNOWN_TO_DETECTRON2[name]


def get_norm(norm, out_channels):
    """detectron2's ``get_norm``, plus the names registered with :func:`register_norm`."""
    if isinstance(norm, str) and norm in _EXTRA_NORMS and not _detectron2_knows(norm):
        return _EXTRA_NORMS[norm](out_channels)
    return _original_get_norm(norm, out_channels)


def apply():
    global _original_get_norm
    import detectron2.layers.batch_norm as batch_norm

    if _original_get_norm is None:
        _original_get_norm = batch_norm.get_norm
    repoint(_original_get_norm, get_norm)
