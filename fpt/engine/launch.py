"""``launch``: detectron2's semantics on CUDA (NCCL) and CPU (gloo), with clear failures.

detectron2 0.6's ``launch`` asserts CUDA and hard-codes NCCL (engine/launch.py:95-99). Here:

* the backend and device follow the config's device and the hardware
  (:func:`distributed_backend`): a CUDA config on a machine with CUDA runs one process per GPU
  over NCCL (``--num-gpus`` larger than the GPUs present is one error line); a CPU config, or a
  CUDA config on a machine without CUDA (which trains on CPU), runs its processes over gloo;
* ``dist_url`` may be ``tcp://HOST:PORT``, ``auto`` (a free local port), or ``env://``
  (``MASTER_ADDR``/``MASTER_PORT``, plus ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` when started by
  torchrun); a process started by torchrun (``env://``) or as one of several tasks of an
  ``srun`` step *is* a worker and spawns nothing: :func:`launcher_environment` reads its rank,
  world size, local rank and rendezvous from the launcher's variables;
* every process group (the world, the per-machine group, detectron2's gloo side group for
  ``comm.all_gather``) gets ``timeout``, so a rank that dies makes the others fail after it;
* a worker that fails logs its rank and full traceback (into its ``log.txt[.rankN]`` once the
  loggers are set up, else on stderr); ``mp.spawn`` stops its siblings and :func:`launch` raises
  :class:`WorkerError`, whose one-line message names the rank, the exception type and message,
  and where the traceback is.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import traceback
from collections import namedtuple
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.utils import comm

from ..utils.text import first_line

__all__ = [
    "launch",
    "launcher_environment",
    "expand_hostlist",
    "LauncherEnvironment",
    "DEFAULT_TIMEOUT",
    "find_free_port",
    "distributed_backend",
    "DistributedError",
    "WorkerError",
]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)

_TORCH_DISTRIBUTED = os.path.dirname(dist.__file__)
_BACKEND_MESSAGE = re.compile(r"\[[^\]\s]*(gloo|nccl|c10d)[^\]\s]*\]")


class DistributedError(RuntimeError):
    """A distributed worker failed or could not join the process group."""


class WorkerError(DistributedError):
    """An exception in a worker process, as one line: rank, exception type and message, and
    where the full traceback was logged. Attributes ``rank``, ``type_name``, ``message``,
    ``log_file`` (None when the traceback went to stderr)."""

    def __init__(self, rank, type_name, message, log_file=None):
        self.rank, self.type_name, self.message, self.log_file = rank, type_name, message, log_file
        where = f"traceback in {log_file}" if log_file else "traceback above"
        super().__init__(f"rank {rank} failed: {type_name}: {message} ({where})")


def find_free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


# The variables each launcher sets for every process it starts. torchrun names the processes on
# this machine; srun names the machines of the step, and its tasks are spread over them evenly
# (block distribution, as ``--ntasks-per-node``): rank // tasks per machine is the machine.
_LAUNCHER_VARIABLES = {
    "torchrun": dict(
        rank="RANK", world_size="WORLD_SIZE", local_rank="LOCAL_RANK", local_size="LOCAL_WORLD_SIZE"
    ),
    "srun": dict(
        rank="SLURM_PROCID",
        world_size="SLURM_STEP_NUM_TASKS",
        local_rank="SLURM_LOCALID",
        machines="SLURM_STEP_NUM_NODES",
        machine_rank="SLURM_NODEID",
    ),
}

LauncherEnvironment = namedtuple(
    "LauncherEnvironment",
    "launcher rank world_size local_rank local_size machine_rank dist_url",
)
LauncherEnvironment.__doc__ = """What torchrun or srun told this process: its ``rank`` of
``world_size``, its ``local_rank`` of the ``local_size`` processes on its machine, the
``machine_rank``, and the rendezvous ``dist_url``; ``launcher`` is "torchrun" or "srun"."""

_HOST_RANGE = re.compile(r"^([^\[,]*)\[([^\]]*)\](.*)$")


def expand_hostlist(hostlist):
    """SLURM's compressed host list as host names: ``"node[01-03,07],gpu5"`` ->
    ``["node01", "node02", "node03", "node07", "gpu5"]`` (zero padding kept; several bracket
    groups in one name, ``"r[1-2]n[1-2]"``, expand as a product)."""
    hosts, depth, start = [], 0, 0
    for i, c in enumerate(hostlist + ","):
        depth += {"[": 1, "]": -1}.get(c, 0)
        if c == "," and depth == 0:
            if i > start:
                hosts += _expand_host(hostlist[start:i])
            start = i + 1
    return hosts


def _expand_host(name):
    match = _HOST_RANGE.match(name)
    if match is None:
        return [name]
    prefix, ranges, rest = match.groups()
    names = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        if not (first.isdigit() and (last or first).isdigit()):
            raise ValueError(f"not a SLURM host list: {name!r} (range {part!r})")
        for n in range(int(first), int(last or first) + 1):
            names.append(f"{prefix}{n:0{len(first)}d}")
    return [a + b for a in names for b in _expand_host(rest)]


def slurm_port(job_id):
    """The rendezvous port of SLURM job ``job_id``: 15000-29999, below Linux's ephemeral ports,
    the same on every node of the job and different for jobs whose ids differ by < 15000."""
    return 15000 + int(job_id) % 15000


def launcher_environment(dist_url=None, environ=None):
    """The :class:`LauncherEnvironment` of a process started by torchrun (with ``dist_url``
    ``env://``) or as one of several tasks of an ``srun`` step (any ``dist_url``: each task is
    one process of the job, never a launcher of its own); None otherwise.

    Under srun the rendezvous is ``tcp://MASTER_ADDR:MASTER_PORT``: by default the first host of
    ``SLURM_STEP_NODELIST`` (the job's node list when the step spans the allocation; rank 0 runs
    there) and :func:`slurm_port` of ``SLURM_JOB_ID``; set either variable to choose.

    Raises:
        DistributedError: srun placed the tasks unevenly over the machines, or cyclically.
    """
    env = os.environ if environ is None else environ
    if dist_url == "env://" and "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun"
    elif "SLURM_STEP_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:
        launcher = "srun"
    elif dist_url == "env://" and "SLURM_STEP_ID" in env:  # a single srun task
        launcher = "srun"
    else:
        return None
    names = _LAUNCHER_VARIABLES[launcher]
    rank, world_size = int(env[names["rank"]]), int(env[names["world_size"]])
    local_rank = int(env.get(names["local_rank"], 0))
    if launcher == "torchrun":
        local_size = int(env.get(names["local_size"], world_size))
        return LauncherEnvironment(
            launcher, rank, world_size, local_rank, local_size, rank // local_size, dist_url
        )
    machines, machine_rank = int(env[names["machines"]]), int(env[names["machine_rank"]])
    local_size = world_size // machines
    if world_size % machines or rank // local_size != machine_rank:
        raise DistributedError(
            f"srun started {world_size} tasks on {machines} machines with task {rank} on machine "
            f"{machine_rank}: give each machine as many tasks, in blocks (srun "
            "--ntasks-per-node=N --distribution=block)"
        )
    nodelist = env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]
    host = env.get("MASTER_ADDR") or expand_hostlist(nodelist)[0]
    port = env.get("MASTER_PORT") or slurm_port(env["SLURM_JOB_ID"])
    return LauncherEnvironment(
        launcher, rank, world_size, local_rank, local_size, machine_rank, f"tcp://{host}:{port}"
    )


def distributed_backend(device, num_processes):
    """The process-group backend for ``num_processes`` workers on this machine.

    Args:
        device (str or None): the config's device (``train.device`` / ``MODEL.DEVICE``);
            None: CUDA when available.
        num_processes (int): worker processes on this machine (``--num-gpus``).

    Returns:
        "nccl" for a CUDA device on a machine with CUDA (one GPU per process); "gloo" for a CPU
        device, or a CUDA device where CUDA is missing (training falls back to CPU).

    Raises:
        DistributedError: a CUDA device, and fewer GPUs than ``num_processes``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return "gloo"
    count = torch.cuda.device_count()
    if num_processes > count:
        raise DistributedError(
            f"--num-gpus {num_processes} asks for {num_processes} processes on this machine, "
            f"but it has {count} CUDA device{'s' if count != 1 else ''}: use --num-gpus {count}, "
            "or train on CPU with train.device=cpu (yacs: MODEL.DEVICE cpu)"
        )
    return "nccl"


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
    device=None,
):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on this machine.

    Args:
        main_func: called in every worker once the process groups are up.
        num_gpus_per_machine (int): processes per machine (GPUs, or CPU workers).
        num_machines (int), machine_rank (int): the multi-machine layout.
        dist_url (str): ``tcp://HOST:PORT``, ``auto`` or ``env://``.
        timeout (timedelta): timeout of every process group: a dead rank is detected after it.
        device (str or None): the config's device, see :func:`distributed_backend`.

    Raises:
        DistributedError: the layout does not fit the machine, or a worker died;
        WorkerError: a worker raised an exception.
    """
    started = launcher_environment(dist_url)
    if started is not None:  # this process is one worker of torchrun's or srun's
        if started.launcher == "srun" and num_gpus_per_machine > 1:
            raise DistributedError(
                f"--num-gpus {num_gpus_per_machine} in one of {started.world_size} srun tasks: "
                "each task is one process; start one task per GPU (srun --ntasks-per-node=G) "
                "without --num-gpus"
            )
        logger.info(f"Started by {started.launcher}: {started}")
        _worker(
            started.local_rank,
            main_func,
            started.world_size,
            started.local_size,
            started.machine_rank,
            started.dist_url,
            args,
            timeout,
            distributed_backend(device, started.local_size),
            None,
            started.rank,
        )
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    backend = distributed_backend(device, num_gpus_per_machine)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs. Prefer tcp://")
    error_dir = tempfile.mkdtemp(prefix="fpt-launch-")
    try:
        mp.spawn(
            _worker,
            nprocs=num_gpus_per_machine,
            args=(
                main_func,
                world_size,
                num_gpus_per_machine,
                machine_rank,
                dist_url,
                args,
                timeout,
                backend,
                error_dir,
            ),
            daemon=False,
        )
    except mp.ProcessRaisedException as e:
        rank = machine_rank * num_gpus_per_machine + e.error_index
        raise _worker_error(rank, error_dir, str(e)) from None
    except mp.ProcessExitedException as e:
        rank = machine_rank * num_gpus_per_machine + e.error_index
        raise DistributedError(
            f"rank {rank} died (exit code {e.exit_code}, signal {e.signal_name}); "
            "the other processes were stopped"
        ) from None
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)


def _worker_error(rank, error_dir, spawn_text):
    """The :class:`WorkerError` of ``rank``, from the report it wrote into ``error_dir`` (or,
    when it could not write one, from ``mp.spawn``'s copy of its traceback)."""
    path = os.path.join(error_dir, f"rank{rank}.json")
    if os.path.isfile(path):
        with open(path) as f:
            report = json.load(f)
        return WorkerError(rank, report["type"], report["message"], report["log_file"])
    logger.error(f"Rank {rank} failed:{spawn_text}")
    last = spawn_text.strip().splitlines()[-1] if spawn_text.strip() else "unknown error"
    type_name, _, message = last.partition(": ")
    return WorkerError(rank, type_name.rsplit(".", 1)[-1], message or last)


def _lost_peer(e):
    """Whether ``e`` comes from the communication layer itself (a collective that timed out, a
    peer that closed its connection): the cause is then most likely another rank. That is a
    ``torch.distributed`` error type, an exception raised in ``torch.distributed``'s code, or one
    that gloo/NCCL raised from C++ (in DDP's backward, say), whose message starts with the
    backend's source location, e.g. ``[.../gloo/transport/tcp/pair.cc:561]``."""
    if isinstance(e, dist.DistError) or _BACKEND_MESSAGE.match(str(e)):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(_TORCH_DISTRIBUTED)


def _log_file(log):
    """The file a logger writes into (detectron2's ``setup_logger``), or None."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
        stream = getattr(handler, "stream", None)  # setup_logger's file handler is a stream one
        name = getattr(stream, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            return os.path.abspath(name)
    return None


def _report_failure(e, rank, timeout, error_dir):
    """Log ``e`` with its rank and full traceback (the "fpt" logger: ``log.txt[.rankN]`` once
    set up, else stderr) and leave a one-line report for the launching process."""
    message = first_line(e)
    if _lost_peer(e):
        message += f" (lost contact with another rank: it died or hung; timeout {timeout})"
    log = logging.getLogger("fpt")
    log_file = _log_file(log)
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    log.error(f"Rank {rank} failed with {type(e).__name__}: {message}\n{text}")
    if error_dir:
        report = {"type": type(e).__name__, "message": message, "log_file": log_file}
        with open(os.path.join(error_dir, f"rank{rank}.json"), "w") as f:
            json.dump(report, f)


@contextlib.contextmanager
def _default_group_timeout(timeout):
    """Inside: ``dist.new_group`` calls without a timeout get ``timeout`` (torch's default is
    30 minutes, whatever ``init_process_group`` was given)."""
    new_group = dist.new_group

    def with_timeout(*args, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout
        return new_group(*args, **kwargs)

    dist.new_group = with_timeout
    try:
        yield
    finally:
        dist.new_group = new_group


def setup_process_groups(num_gpus_per_machine, machine_rank, timeout):
    """After ``init_process_group``: the per-machine group (``comm.get_local_rank``) and
    detectron2's cached gloo side group (``comm.all_gather``/``gather`` on NCCL runs), both
    with ``timeout``. Every rank calls this, in the same order."""
    num_machines = dist.get_world_size() // num_gpus_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks, timeout=timeout)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm._get_global_gloo_group.cache_clear()
    with _default_group_timeout(timeout):
        comm._get_global_gloo_group()


def _worker(
    local_rank,
    main_func,
    world_size,
    num_gpus_per_machine,
    machine_rank,
    dist_url,
    args,
    timeout,
    backend,
    error_dir=None,
    global_rank=None,
):
    if global_rank is None:
        global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(
                backend=backend,
                init_method=dist_url,
                world_size=world_size,
                rank=global_rank,
                timeout=timeout,
            )
        except Exception as e:
            raise DistributedError(
                f"rank {global_rank} could not join the process group at {dist_url} "
                f"({backend}, world size {world_size}): {first_line(e)}"
            ) from None
        setup_process_groups(num_gpus_per_machine, machine_rank, timeout)
        comm.synchronize()
        main_func(*args)
    except Exception as e:
        _report_failure(e, global_rank, timeout, error_dir)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
