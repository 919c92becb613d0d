"""Training as a SLURM job submitted through submitit (``tools/submit.py``), requeued on
preemption and time-out.

submitit writes an sbatch script that runs one ``srun`` task per GPU (one per node on CPU), each
loading the pickled :class:`TrainJob` and calling it: ``train_net.py``'s :func:`~.main.run`, whose
launch takes the ranks and the rendezvous from SLURM's variables
(:func:`~.launch.launcher_environment`). The job is requeued

* on preemption and ``scontrol requeue``: SLURM sends ``SIGTERM`` and requeues the job itself;
  the trainer saves a checkpoint at once and stops (:mod:`.preemption`);
* before the time limit: submitit's sbatch flag ``--signal=USR2@90`` sends ``SIGUSR2`` 90 s
  before it; the trainer saves a checkpoint and stops, then rank 0 hands over to submitit's own
  handler, which calls :meth:`TrainJob.checkpoint` (the same job with ``--resume``), stores it
  for the next start and runs ``scontrol requeue`` (at most ``max_requeues`` times).

A requeued job (``SLURM_RESTART_COUNT`` > 0) always resumes, so a job that SLURM itself put back
into the queue (preemption, node failure) also continues from its last checkpoint.
"""

import contextlib
import io
import os
import re
import shutil
import signal

from .main import run
from .preemption import watcher

__all__ = ["SubmitError", "TrainJob", "parse_minutes", "submit"]


class SubmitError(RuntimeError):
    """The job could not be submitted (submitit or sbatch missing, sbatch refused it)."""


class TrainJob:
    """``train_net.py argv`` in ``cwd``, with ``environ`` added to the environment: the callable
    submitit runs in every task (its ``Checkpointable`` protocol: :meth:`checkpoint`)."""

    def __init__(self, argv, cwd, environ=None):
        self.argv = list(argv)
        self.cwd = cwd
        self.environ = dict(environ or {})

    def __call__(self):
        os.chdir(self.cwd)
        os.environ.update(self.environ)
        restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        # flags before the trailing key=value overrides, which take the rest of the line
        argv = ["--resume", *self.argv] if restarted and "--resume" not in self.argv else self.argv
        try:
            run(argv)
        except SystemExit:
            if watcher.received == signal.SIGUSR2:  # the time limit is near: requeue the job
                submitit_handler = watcher.previous.get(signal.SIGUSR2)
                if callable(submitit_handler):  # checkpoint() + scontrol requeue, on rank 0
                    submitit_handler(signal.SIGUSR2, None)
            raise

    def checkpoint(self, *args, **kwargs):
        """The job to run when it starts again: the same, resuming from its last checkpoint."""
        from submitit.helpers import DelayedSubmission

        argv = self.argv if "--resume" in self.argv else ["--resume", *self.argv]
        return DelayedSubmission(TrainJob(argv, self.cwd, self.environ))


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_minutes(text):
    """SLURM's time limit as whole minutes (rounded up): ``MINUTES``, ``MINUTES:SECONDS``,
    ``HOURS:MINUTES:SECONDS``, ``DAYS-HOURS[:MINUTES[:SECONDS]]``."""
    match = _TIME.match(text.strip())
    if match is None:
        raise ValueError(f"not a SLURM time limit: {text!r} (MINUTES, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = (a * 60 + b) * 60 + c
    else:  # M, M:S
        seconds = a * 60 + (b or 0)
    return max(1, -(-seconds // 60))


def submit(
    train_argv,
    folder,
    nodes=1,
    gpus_per_node=1,
    minutes=60,
    partition=None,
    cpus_per_task=None,
    mem=None,
    job_name="fpt",
    signal_delay_s=90,
    max_requeues=3,
):
    """Submit ``train_net.py train_argv`` as a SLURM job; returns submitit's job.

    Args:
        train_argv (list[str]): ``train_net.py``'s flags and overrides (checked by the caller).
        folder (str): submitit's folder (the sbatch script, the pickled job, the tasks' logs).
        nodes (int), gpus_per_node (int): one task per GPU on each node; ``gpus_per_node=0``: one
            task per node, on CPU (``CUDA_VISIBLE_DEVICES`` empty: a ``cuda`` config falls back).
        minutes (int): the time limit; ``signal_delay_s`` before it the job checkpoints and is
            requeued, at most ``max_requeues`` times.
        partition, cpus_per_task, mem (e.g. ``"64G"``), job_name: sbatch's flags of these names.

    Raises:
        SubmitError: submitit or sbatch missing, or sbatch refused the job (its message).
    """
    try:
        import submitit
    except ImportError:
        raise SubmitError(
            "submitit is not installed: pip install 'fpt[slurm]' (or submitit)"
        ) from None
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SubmitError("sbatch/srun not found: submit from a machine of the SLURM cluster")
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    parameters = dict(
        nodes=nodes,
        ntasks_per_node=max(gpus_per_node, 1),
        time=minutes,
        job_name=job_name,
        signal_delay_s=signal_delay_s,
    )
    if gpus_per_node:
        parameters["gpus_per_node"] = gpus_per_node
    for key, value in (("partition", partition), ("cpus_per_task", cpus_per_task), ("mem", mem)):
        if value is not None:
            parameters[key] = value
    executor.update_parameters(**parameters)
    environ = {} if gpus_per_node else {"CUDA_VISIBLE_DEVICES": ""}
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's stderr too
            return executor.submit(TrainJob(train_argv, os.getcwd(), environ))
    except submitit.core.utils.FailedJobError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["no message"]
        raise SubmitError(f"sbatch refused the job: {lines[-1]}") from None
