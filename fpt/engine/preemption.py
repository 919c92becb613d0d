"""A checkpoint at once when SLURM preempts, requeues or times out a job, then a clean stop.

What SLURM sends to every process of a job step:

* ``scontrol requeue``, preemption (``PreemptMode=REQUEUE``) and the time limit: ``SIGCONT`` and
  ``SIGTERM``, then ``SIGKILL`` ``KillWait`` seconds later (30 by default; ``GraceTime`` of the
  partition for preemption). On a requeue SLURM itself puts the job back into the queue;
* ``sbatch --signal=USR2@S`` (submitit's default, S = 90): ``SIGUSR2`` S seconds before the time
  limit, which submitit's handler answers with a requeue (``tools/submit.py``).

:func:`watch_stop_signals` (called by each worker of a SLURM job) replaces the handlers of both
signals with one that only records the signal: a handler cannot save a consistent checkpoint in
the middle of a step. :class:`SignalCheckpointer`, the trainer's last hook, looks after every
iteration; once any rank has the signal, every rank stops after the same iteration: their resume
states (RNGs, sampler) are gathered, rank 0 writes ``model_<iteration>.pth`` (atomically; it
becomes ``last_checkpoint``) and :class:`Interrupted` ends training, so that ``--resume`` continues
exactly where the run stopped. Data-loader workers forked after the handlers were installed
inherit them and keep running until the main process stops.
"""

import logging
import os
import signal
import threading

import torch
import torch.distributed as dist

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "SignalCheckpointer",
    "SignalWatcher",
    "watch_stop_signals",
    "watcher",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

logger = logging.getLogger(__name__)


class Interrupted(BaseException):
    """Training stopped on ``signum`` after ``iteration``, its state saved in ``checkpoint``.

    A ``BaseException`` (as ``SystemExit``): it ends the process past the ``except Exception``
    clauses that would report a failed run (detectron2's training loop, :func:`~.launch.launch`'s
    workers); the training hooks' ``after_train`` still run. ``exit_code`` is ``128 + signum``,
    as for a process ended by the signal."""

    def __init__(self, signum, iteration, checkpoint):
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after iteration {iteration}: its "
            f"checkpoint is {checkpoint}; --resume continues from it"
        )


class SignalWatcher:
    """Records the first stop signal this process receives (``received``: its number, or
    None), in place of the handlers it replaces (``previous[signum]``)."""

    def __init__(self):
        self.received = None
        self.previous = {}

    @property
    def installed(self):
        return bool(self.previous)

    def install(self, signals=STOP_SIGNALS):
        """Handle ``signals`` from now on (main thread only; again: no change)."""
        for signum in signals:
            if signum not in self.previous:
                self.previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum, frame):
        # no logging here: the handler may run while the logging lock is held
        if self.received is None:
            self.received = signum


watcher = SignalWatcher()  # this process's


def watch_stop_signals(environ=None):
    """In a SLURM job (``SLURM_JOB_ID`` set) and the main thread: let :data:`watcher` handle
    :data:`STOP_SIGNALS`. Returns whether it does."""
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" in env and threading.current_thread() is threading.main_thread():
        watcher.install()
    return watcher.installed


class SignalCheckpointer(HookBase):
    """After each iteration: if a rank received a stop signal (the largest signal number over
    the ranks, on the gloo side group, so no CUDA synchronisation), every rank gathers its resume
    state, rank 0 saves ``model_<iteration>``, and all raise :class:`Interrupted`. Register it
    last on every rank, so that the checkpoint holds the state after the whole iteration (LR
    step, EMA, evaluation)."""

    def __init__(self, signal_watcher=None):
        self.watcher = signal_watcher or watcher

    def after_step(self):
        signum = self.watcher.received or 0
        if comm.get_world_size() > 1:
            flag = torch.tensor([signum])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=comm._get_global_gloo_group())
            signum = int(flag)
        if not signum:
            return
        trainer = self.trainer
        it = trainer.iter
        trainer.rank_states = (it, comm.all_gather(trainer.rank_state()))
        name = f"model_{it:07d}"
        if comm.is_main_process():
            logger.warning(f"{signal.Signals(signum).name} received: saving {name} and stopping")
            trainer.checkpointer.save(name, iteration=it)
        comm.synchronize()
        raise Interrupted(signum, it, os.path.join(trainer.checkpointer.save_dir, name + ".pth"))
