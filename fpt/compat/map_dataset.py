"""``MapDataset`` retries on Python 3.11 (``random.sample`` of a set).

What: give each ``detectron2.data.common.MapDataset`` a ``random.Random`` whose ``sample``
accepts a set, as Python <= 3.10's did: it samples from ``tuple(the_set)``, so the retried
indices are the ones detectron2 drew on Python 3.10 (same seed, same order).
``MapDataset.__init__`` runs unchanged, then its ``_rng`` is swapped for this one (same state).
Why: when the mapper returns ``None`` (detectron2's documented way to skip an item; our
``RobustDatasetMapper`` does it for unreadable images), ``MapDataset.__getitem__`` draws another
index with ``self._rng.sample(self._fallback_candidates, k=1)`` on a ``set``
(data/common.py:95). Python 3.11 raises ``TypeError: Population must be a sequence``, so
training crashed at the first skipped image.
When it can go: when detectron2 samples from a sequence there (newer than 0.6).
"""

import collections.abc
import functools
import random


class SetSamplingRandom(random.Random):
    """``random.Random`` whose ``sample`` also takes a set (as ``tuple(set)``, Python <= 3.10)."""

    def sample(self, population, k, *, counts=None):
        if isinstance(population, collections.abc.Set):
            population = tuple(population)
        return super().sample(population, k, counts=counts)


def apply():
    from detectron2.data.common import MapDataset

    init = MapDataset.__init__
    if getattr(init, "__fpt_patched__", False):
        return

    @functools.wraps(init)
    def __init__(self, dataset, map_func):
        init(self, dataset, map_func)
        if type(self._rng) is random.Random:
            rng = SetSamplingRandom()
            rng.setstate(self._rng.getstate())
            self._rng = rng

    __init__.__fpt_patched__ = True
    MapDataset.__init__ = __init__
