"""``launch``: detectron2's semantics on CUDA (NCCL) and CPU (gloo), with clear failures.

detectron2 0.6's ``launch`` asserts CUDA and hard-codes NCCL (engine/launch.py:95-99). Here:

* the backend is NCCL when CUDA has enough devices, else gloo (so ``--num-gpus 2`` on a CPU
  machine runs 2 processes);
* ``dist_url`` may be ``tcp://HOST:PORT``, ``auto`` (a free local port), or ``env://``
  (``MASTER_ADDR``/``MASTER_PORT``, plus ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` when started by
  torchrun or SLURM: then this process *is* the worker and nothing is spawned);
* a rank that dies makes the others exit with a clear error instead of hanging: collectives
  time out after ``timeout``, and ``mp.spawn`` terminates the siblings of a failed process.
"""

import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.utils import comm

from ..config_loading import first_line

__all__ = ["launch", "DEFAULT_TIMEOUT", "find_free_port", "DistributedError"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


class DistributedError(RuntimeError):
    """A distributed worker failed or could not join the process group."""


def find_free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _backend(num_gpus_per_machine):
    if torch.cuda.is_available() and torch.cuda.device_count() >= num_gpus_per_machine:
        return "nccl"
    return "gloo"


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on this machine.

    Args:
        main_func: called in every worker once the process group is up.
        num_gpus_per_machine (int): processes per machine (GPUs, or CPU workers without CUDA).
        num_machines (int), machine_rank (int): the multi-machine layout.
        dist_url (str): ``tcp://HOST:PORT``, ``auto`` or ``env://``.
        timeout (timedelta): collective-operation timeout: a dead rank is detected after it.
    """
    if dist_url == "env://" and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # started by torchrun / SLURM: this process is one worker
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", num_gpus_per_machine))
        _worker(
            local_rank,
            main_func,
            world_size,
            local_world,
            int(os.environ["RANK"]) // max(local_world, 1),
            dist_url,
            args,
            timeout,
            int(os.environ["RANK"]),
        )
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs. Prefer tcp://")
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
            ),
            daemon=False,
        )
    except mp.ProcessRaisedException as e:
        first = str(e).strip().splitlines()[-1]
        raise DistributedError(f"a training process failed: {first}") from None
    except mp.ProcessExitedException as e:
        raise DistributedError(
            f"a training process died (exit code {e.exit_code}, signal {e.signal_name}); "
            "the other processes were stopped"
        ) from None


def _worker(
    local_rank,
    main_func,
    world_size,
    num_gpus_per_machine,
    machine_rank,
    dist_url,
    args,
    timeout,
    global_rank=None,
):
    backend = _backend(num_gpus_per_machine)
    if global_rank is None:
        global_rank = machine_rank * num_gpus_per_machine + local_rank
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
            f"({backend}, world size {world_size}): {e}"
        ) from None
    # the local process group (ranks on this machine), as detectron2's launch sets it up
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    try:
        comm.synchronize()
        main_func(*args)
    except Exception as e:
        if (
            isinstance(e, dist.DistBackendError)
            or "timed out" in str(e).lower()
            or "connection" in str(e).lower()
        ):
            raise DistributedError(
                f"rank {global_rank}: lost contact with another rank (it died or hung; "
                f"timeout {timeout}): {first_line(e)}"
            ) from None
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
