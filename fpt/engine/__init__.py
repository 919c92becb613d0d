"""Training: the ``Trainer`` for LazyConfig and yacs configs, launch on CPU/GPU, and
``train_net.py``'s logic (:func:`main`)."""

from .args import default_argument_parser
from .checkpoint import AtomicCheckpointer
from ..config import ConfigError, RunConfig, check_overrides, load_config
from .ddp import create_ddp_model
from .launch import DistributedError, WorkerError, launch
from .main import main, run
from .train_loop import AccumulatingAMPTrainer, NonFiniteLossError, renamed_amp_trainer
from .trainer import Trainer

__all__ = [
    "AccumulatingAMPTrainer",
    "AtomicCheckpointer",
    "ConfigError",
    "DistributedError",
    "NonFiniteLossError",
    "RunConfig",
    "Trainer",
    "WorkerError",
    "check_overrides",
    "create_ddp_model",
    "default_argument_parser",
    "launch",
    "load_config",
    "main",
    "run",
]


def __getattr__(name):  # AMPTrainer: AccumulatingAMPTrainer's previous name, for one release
    if name == "AMPTrainer":
        return renamed_amp_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
