"""The error of a checkpoint that cannot be used with a model."""

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (message: one line naming the file or layout and
    what to do)."""
