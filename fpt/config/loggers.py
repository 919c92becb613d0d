"""The ``train.loggers`` option (yacs ``LOGGERS``): where training metrics go.

``tensorboard`` and ``json`` (``metrics.json``) are detectron2's writers and the default;
``wandb`` and ``mlflow`` are experiment trackers (:mod:`fpt.engine.tracking`), each configured by
its entry of ``train.logger_options`` (yacs ``LOGGER_OPTIONS.<NAME>.<KEY>``) and installed as an
extra (``pip install 'fpt[mlflow]'``). This module only names and checks them; the engine writes.
"""

import importlib

from .errors import ConfigError

__all__ = ["LOGGERS", "LOGGER_OPTIONS", "check_loggers"]

LOGGERS = ("tensorboard", "json", "wandb", "mlflow")

# each tracker's options and their defaults ("": the tracker's own default); a tracker's name is
# also the package it imports and the extra that installs it
LOGGER_OPTIONS = dict(
    mlflow=dict(
        tracking_uri="",  # "": MLFLOW_TRACKING_URI, else ./mlruns
        experiment="fpt",
        run_name="",
        log_checkpoints=False,  # upload each checkpoint as an artifact
    ),
    wandb=dict(
        project="fpt",
        entity="",
        run_name="",
        mode="",  # "online", "offline" or "disabled"; "": WANDB_MODE, else online
        log_checkpoints=False,  # upload each checkpoint as a model artifact
    ),
)


def check_loggers(names, options, key, options_key):
    """The loggers to build: ``{name: its options}`` in the order of ``names`` (the config's
    ``key``, e.g. ``train.loggers``), each tracker's options (``options[name]``, from the
    config's ``options_key``) filled with the defaults; ``{}`` for tensorboard and json.

    Raises :class:`ConfigError` (one line) for an unknown logger or option, or a tracker whose
    package is not installed."""
    unknown = sorted(set(options) - set(LOGGER_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{options_key}: unknown logger(s) {unknown}; expected {list(LOGGER_OPTIONS)}"
        )
    for logger, given in options.items():
        unknown = sorted(set(given or {}) - set(LOGGER_OPTIONS[logger]))
        if unknown:
            raise ConfigError(
                f"{options_key}.{logger}: unknown option(s) {unknown}; "
                f"expected some of {list(LOGGER_OPTIONS[logger])}"
            )
    loggers = {}
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"{key}: unknown logger {name!r}; expected some of {list(LOGGERS)}")
        if name in LOGGER_OPTIONS and not _importable(name):
            raise ConfigError(
                f"{key} names {name!r}, but the {name} package is not installed: "
                f"pip install 'fpt[{name}]'"
            )
        loggers[name] = {**LOGGER_OPTIONS.get(name, {}), **(options.get(name) or {})}
    return loggers


def _importable(package):
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True
