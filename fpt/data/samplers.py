"""Training samplers whose position is part of the checkpoint.

detectron2's ``TrainingSampler`` and ``RepeatFactorTrainingSampler`` restart their infinite,
seeded index streams from the beginning after ``--resume``, so a resumed run sees other images
than an uninterrupted one. The samplers here yield exactly detectron2's streams and can skip their
first ``start`` indices (cheap: indices only, no image is read). Their seed is part of their
state: with ``train.seed < 0`` detectron2 draws one at random, which a resumed run must reuse.

The trainer builds them through :func:`build_resumable_sampler` (with ``train.seed``); a config
picks one with ``dataloader.train.sampler = L(RepeatFactorSampler)(repeat_thresh=0.001)``
(LazyConfig: the training set and the seed are filled in) or
``DATALOADER.SAMPLER_TRAIN: RepeatFactorTrainingSampler`` + ``DATALOADER.REPEAT_THRESHOLD``
(yacs).
"""

import itertools
import math
from collections import Counter

import torch

from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

__all__ = [
    "RepeatFactorSampler",
    "ResumableSampler",
    "ResumableTrainingSampler",
    "build_resumable_sampler",
    "repeat_factors",
]


class ResumableSampler:
    """Mixin for a detectron2 training sampler (one with a ``_seed``): skips the first ``start``
    indices of this rank's stream, and saves and restores its seed and position."""

    start = 0

    @classmethod
    def from_dataset(cls, dataset_dicts, **kwargs):
        """The sampler for a training set (a list of dataset dicts)."""
        return cls(dataset_dicts, **kwargs)

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.start, None)

    def state_dict(self):
        return {"seed": int(self._seed), "start": int(self.start)}

    def load_state_dict(self, state_dict):
        """Take the seed and position of a :meth:`state_dict` (before iterating)."""
        self._seed = int(state_dict["seed"])
        self.start = int(state_dict["start"])

    def resume_at(self, samples_consumed):
        """Skip the indices this rank consumed before the checkpoint."""
        self.start = int(samples_consumed)


class ResumableTrainingSampler(ResumableSampler, TrainingSampler):
    """``TrainingSampler`` (same arguments) plus ``start``: indices of this rank to skip."""

    def __init__(self, size, shuffle=True, seed=None, start=0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = start

    @classmethod
    def from_dataset(cls, dataset_dicts, **kwargs):
        return cls(len(dataset_dicts), **kwargs)


def repeat_factors(dataset_dicts, repeat_thresh, sqrt=True):
    """Per-image repeat factors of repeat-factor sampling (LVIS paper, appendix B.2).

    With ``f(c)`` the fraction of images that contain category ``c``, the category's factor is
    ``r(c) = max(1, sqrt(t / f(c)))`` (``t / f(c)`` when ``sqrt=False``), and an image's factor is
    the largest of its categories' (1 for an image without annotations).
    Returns a float32 tensor, one factor per image.
    """
    categories = [{a["category_id"] for a in d.get("annotations", [])} for d in dataset_dicts]
    images_with = Counter(c for cats in categories for c in cats)
    n = len(dataset_dicts)

    def factor(count):
        ratio = repeat_thresh / (count / n)
        return max(1.0, math.sqrt(ratio) if sqrt else ratio)

    per_category = {c: factor(count) for c, count in images_with.items()}
    return torch.tensor(
        [max((per_category[c] for c in cats), default=1.0) for cats in categories],
        dtype=torch.float32,
    )


class RepeatFactorSampler(ResumableSampler, RepeatFactorTrainingSampler):
    """detectron2's ``RepeatFactorTrainingSampler`` (the same index stream for the same factors
    and seed), its factors computed from the training set by :func:`repeat_factors`, plus
    ``start``: indices of this rank to skip.

    Args:
        dataset_dicts (list[dict]): the training set (filled in by the trainer from a config).
        repeat_thresh (float): the frequency threshold ``t`` (LVIS: 0.001).
        sqrt (bool): square root of ``t / f(c)`` (detectron2's default) or the ratio itself.
        shuffle, seed: as in ``RepeatFactorTrainingSampler``.
        start (int): indices of this rank's stream to skip.
    """

    def __init__(self, dataset_dicts, repeat_thresh, sqrt=True, shuffle=True, seed=None, start=0):
        factors = repeat_factors(dataset_dicts, repeat_thresh, sqrt=sqrt)
        super().__init__(factors, shuffle=shuffle, seed=seed)
        self.repeat_factors = factors
        self.start = start


def build_resumable_sampler(dataset_dicts, sampler_class=ResumableTrainingSampler, **kwargs):
    """A :class:`ResumableSampler` of ``sampler_class`` for the training set ``dataset_dicts``
    (``kwargs``: the class's other arguments, e.g. ``seed``, ``repeat_thresh``)."""
    return sampler_class.from_dataset(dataset_dicts, **kwargs)
