"""Training: the ``Trainer`` for LazyConfig and yacs configs, launch on CPU/GPU, and
``train_net.py``'s logic (:func:`main`)."""

from .args import default_argument_parser
from .checkpoint import AtomicCheckpointer
from ..config_loading import ConfigError, check_overrides, load_config
from .ddp import create_ddp_model
from .launch import DistributedError, WorkerError, launch
from .main import main, run
from .train_loop import AMPTrainer, NonFiniteLossError
from .trainer import Trainer

__all__ = [
    "AMPTrainer",
    "AtomicCheckpointer",
    "ConfigError",
    "DistributedError",
    "NonFiniteLossError",
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
