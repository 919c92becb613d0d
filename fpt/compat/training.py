"""Warnings that detectron2 0.6's training and evaluation loops raise on torch 2 / Python 3.11.

What:
* ``comm.all_gather``/``comm.gather`` serialize through ``torch.ByteStorage.from_buffer``
  (utils/comm.py:114): torch warns that ``TypedStorage`` is deprecated on every call in a
  multi-process run. :func:`_serialize_to_tensor` builds the same uint8 tensor with
  ``torch.frombuffer``.
* ``COCOEvaluator`` logs "No predictions from the model!" with ``Logger.warn``
  (evaluation/coco_evaluation.py:332, common early in training), which Python 3.11 deprecates.
  The evaluator's own logger object gets ``warn = warning``; no other logger changes.
(The engine's other warnings — ``torch.cuda.amp`` in ``AMPTrainer``, ``device_ids`` for CPU
DDP — are avoided by ``fpt.engine`` not calling those code paths.)
Why: warnings on the normal path hide the ones that matter, and fail ``-W error`` runs.
When it can go: with a detectron2 release newer than 0.6 (both are fixed upstream).
"""

import logging
import pickle

import torch
import torch.distributed as dist


def _serialize_to_tensor(data, group):
    """detectron2.utils.comm._serialize_to_tensor without ``TypedStorage``."""
    backend = dist.get_backend(group)
    device = torch.device("cuda" if backend == "nccl" else "cpu")
    buffer = pickle.dumps(data)
    if len(buffer) > 1024**3:
        logging.getLogger("detectron2.utils.comm").warning(
            "Rank {} trying to all-gather {:.2f} GB of data on device {}".format(
                dist.get_rank(), len(buffer) / (1024**3), device
            )
        )
    return torch.frombuffer(bytearray(buffer), dtype=torch.uint8).to(device=device)


def apply():
    from detectron2.utils import comm

    if hasattr(comm, "_serialize_to_tensor"):  # 0.6; main gathers with torch's *_object calls
        comm._serialize_to_tensor = _serialize_to_tensor
    coco_logger = logging.getLogger("detectron2.evaluation.coco_evaluation")
    coco_logger.warn = coco_logger.warning
