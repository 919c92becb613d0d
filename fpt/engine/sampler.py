"""A training sampler whose position is part of the checkpoint.

detectron2's ``TrainingSampler`` restarts its infinite, seeded index stream from the beginning
after ``--resume``, so a resumed run sees other images than an uninterrupted one.
:class:`ResumableTrainingSampler` yields exactly the same stream and can skip its first
``start`` indices (cheap: indices only, no image is read). Its seed is part of its state: with
``train.seed < 0`` detectron2 draws one at random, which a resumed run must reuse.
"""

import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """``TrainingSampler`` (same arguments) plus ``start``: indices of this rank to skip."""

    def __init__(self, size, shuffle=True, seed=None, start=0):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = start

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
