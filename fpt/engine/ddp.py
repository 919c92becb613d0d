"""DistributedDataParallel that also works on CPU (gloo).

detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]`` (wrong for a CPU
module), and ``torch.nn.SyncBatchNorm`` only runs on CUDA. Here ``device_ids`` is set only for
CUDA models, and on CPU every ``SyncBatchNorm`` becomes detectron2's ``NaiveSyncBatchNorm``
(same statistics across ranks, through plain ``all_reduce`` that gloo supports), with a logged note:
:func:`prepare_sync_batchnorm`, which must run before the optimizer is built (the replacement
layers have new parameters; the trainer calls it when it builds the model).
detectron2's ``train.ddp.broadcast_buffers`` is passed as ``forward_sync_buffers`` where torch
deprecated the old name.
"""

import inspect
import logging

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm

__all__ = ["create_ddp_model", "cpu_safe_sync_batchnorm", "prepare_sync_batchnorm"]

logger = logging.getLogger(__name__)

_HAS_FORWARD_SYNC = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters


def cpu_safe_sync_batchnorm(module):
    """Replace every ``torch.nn.SyncBatchNorm`` in ``module`` by ``NaiveSyncBatchNorm`` (in
    place, keeping weights and running statistics). Returns the number replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.SyncBatchNorm):
            new = NaiveSyncBatchNorm(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
            count += 1
        else:
            count += cpu_safe_sync_batchnorm(child)
    return count


def prepare_sync_batchnorm(model):
    """On CPU in a multi-process run, replace ``model``'s ``SyncBatchNorm`` layers (CUDA only) by
    ``NaiveSyncBatchNorm`` (in place). Call it before building the optimizer: the new layers'
    parameters are new tensors. Returns the number replaced (0 on CUDA or in one process)."""
    if comm.get_world_size() == 1 or next(model.parameters()).is_cuda:
        return 0
    n = cpu_safe_sync_batchnorm(model)
    if n:
        logger.info(
            f"CPU training: {n} SyncBatchNorm layers run as NaiveSyncBatchNorm "
            "(all_reduce over gloo)."
        )
    return n


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """Wrap ``model`` in DDP when there is more than one process (else return it unchanged).

    Args:
        model (nn.Module): on CUDA or CPU; for training, already through
            :func:`prepare_sync_batchnorm` before its optimizer was built.
        fp16_compression (bool): fp16 gradient all-reduce (CUDA only; ignored on CPU).
        kwargs: more ``DistributedDataParallel`` arguments (e.g. ``broadcast_buffers``).
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    if on_cuda:
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    else:
        prepare_sync_batchnorm(model)  # a no-op when the trainer already did it
    if "broadcast_buffers" in kwargs and _HAS_FORWARD_SYNC:
        # torch >= 2.13 renamed it (and warns on the old name); same per-forward behaviour
        kwargs["forward_sync_buffers"] = kwargs.pop("broadcast_buffers")
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression and on_cuda:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp
