"""A ``DatasetMapper`` that tolerates corrupt images during training.

``detectron2.data.DatasetMapper`` raises deep inside a data-loader worker when an image cannot
be decoded (truncated download, wrong extension), which kills a long training run.
:class:`RobustDatasetMapper` logs one warning naming the file and returns ``None``: detectron2's
``MapDataset`` then draws another image. At test time (``is_train=False``) a corrupt image is an
error, raised as one line naming the file, because skipping it would change the metric.
"""

import logging

from PIL import UnidentifiedImageError

from detectron2.data import DatasetMapper

from .images import ImageReadError

__all__ = ["RobustDatasetMapper"]

logger = logging.getLogger(__name__)


class RobustDatasetMapper(DatasetMapper):
    """``DatasetMapper`` (same arguments) that skips unreadable images when ``is_train``."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except FileNotFoundError:
            raise ImageReadError(
                f"image {dataset_dict.get('file_name')!r} does not exist"
            ) from None
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            # PIL raises OSError for truncated files, UnidentifiedImageError for non-images
            message = f"cannot read image {dataset_dict.get('file_name')!r}: {e}"
            if not self.is_train:
                raise ImageReadError(message) from None
            logger.warning("Skipping a training image: %s", message)
            return None
