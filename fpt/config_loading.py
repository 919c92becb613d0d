"""Kept for the code that imports it (configs, tools, the export package): config loading now
lives in :mod:`fpt.config` (:mod:`~fpt.config.loading`, :mod:`~fpt.config.overrides`,
:mod:`~fpt.config.errors`), and ``first_line`` in :mod:`fpt.utils.text`."""

import warnings

from .config import (  # noqa: F401
    TRAIN_DEFAULTS,
    ConfigError,
    add_training_config,
    check_overrides,
    check_rpe_specs,
    fill_train_defaults,
    get_common_train,
    is_lazy_config,
    load_config,
)
from .utils.text import first_line  # noqa: F401

__all__ = [
    "TRAIN_DEFAULTS",
    "ConfigError",
    "add_training_config",
    "check_overrides",
    "check_rpe_specs",
    "fill_train_defaults",
    "first_line",
    "get_common_train",
    "is_lazy_config",
    "load_config",
]

warnings.warn(
    "fpt.config_loading is deprecated and will be removed in the next release: import from "
    "fpt.config (first_line: fpt.utils.text)",
    FutureWarning,
    stacklevel=2,
)
