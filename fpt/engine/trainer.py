"""``Trainer``: detectron2's ``DefaultTrainer`` for LazyConfigs (.py) and yacs configs (.yaml).

Builds model, optimizer, LR schedule, data loaders, evaluators and hooks from either config
kind; adds AMP on CPU and CUDA, gradient accumulation and clipping, EMA, atomic checkpoints,
a resumable data sampler, per-rank RNG state in checkpoints, best-checkpoint tracking, results
JSON and a metrics plot.
"""

import hashlib
import logging
import os
import weakref
from types import SimpleNamespace

import torch
from omegaconf import DictConfig

from detectron2.config import CfgNode, instantiate
from detectron2.config.instantiate import locate
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, TrainerBase, default_writers, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.utils import comm

from fpt.data import RobustDatasetMapper, check_image_files
from fpt.evaluation import evaluate
from fpt.predictor import pick_device

from .checkpoint import AtomicCheckpointer
from .config import scale_to_world_size
from .ddp import create_ddp_model, prepare_sync_batchnorm
from .hooks import EMAHook, PlotHook, RankStateHook
from .rng import get_rng_state, preserved_rng, set_rng_state
from .sampler import ResumableTrainingSampler
from .train_loop import AMPTrainer

__all__ = [
    "Trainer",
    "configured_device",
    "train_settings",
    "training_device",
    "weights_digest",
]

logger = logging.getLogger(__name__)


def configured_device(cfg):
    """The device a config asks for: ``train.device`` (LazyConfig) or ``MODEL.DEVICE`` (yacs)."""
    return cfg.train.device if isinstance(cfg, DictConfig) else cfg.MODEL.DEVICE


def training_device(configured):
    """The device this process trains on: the configured one (``cuda`` falls back to ``cpu``
    where CUDA is missing, see ``pick_device``); in a multi-process CUDA run, this process's
    GPU, ``cuda:<local rank>``, whatever index the config names."""
    device = pick_device(configured=configured)
    if device.type == "cuda" and comm.get_world_size() > 1:
        return torch.device("cuda", comm.get_local_rank())
    return device


def train_settings(cfg):
    """The training settings of a LazyConfig (``cfg.train``) or yacs config, as one namespace."""
    if isinstance(cfg, DictConfig):
        t = cfg.train
        clip = t.clip_gradients
        return SimpleNamespace(
            output_dir=t.output_dir,
            init_checkpoint=t.init_checkpoint,
            max_iter=t.max_iter,
            checkpoint_period=t.checkpointer.period,
            max_to_keep=t.checkpointer.get("max_to_keep", 100),
            eval_period=t.eval_period,
            log_period=t.log_period,
            device=str(training_device(t.device)),
            amp=t.amp.enabled,
            iter_size=t.iter_size,
            clip=(
                dict(clip_type=clip.clip_type, clip_value=clip.clip_value, norm_type=clip.norm_type)
                if clip.enabled
                else None
            ),
            ema=t.ema.decay if t.ema.enabled else None,
            best_metric=t.best_checkpoint.metric,
            best_mode=t.best_checkpoint.mode,
            ddp=dict(t.ddp),
            plot=t.plot,
            seed=t.seed,
        )
    return SimpleNamespace(
        output_dir=cfg.OUTPUT_DIR,
        init_checkpoint=cfg.MODEL.WEIGHTS,
        max_iter=cfg.SOLVER.MAX_ITER,
        checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
        max_to_keep=None,
        eval_period=cfg.TEST.EVAL_PERIOD,
        log_period=20,
        device=str(training_device(cfg.MODEL.DEVICE)),
        amp=cfg.SOLVER.AMP.ENABLED,
        iter_size=cfg.SOLVER.ITER_SIZE,
        clip=None,  # SOLVER.CLIP_GRADIENTS is applied by detectron2's build_optimizer
        ema=cfg.MODEL_EMA.DECAY if cfg.MODEL_EMA.ENABLED else None,
        best_metric=cfg.TEST.BEST_METRIC,
        best_mode="max",
        ddp=dict(broadcast_buffers=False),
        plot=True,
        seed=cfg.SEED,
    )


def weights_digest(model):
    """sha256 of all parameters (in name order): equal on every DDP rank after training."""
    model = model.module if hasattr(model, "module") else model
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` (same workflow: ``resume_or_load()``, ``train()``, ``test()``) for
    LazyConfigs and yacs configs. ``cfg`` comes from :func:`fpt.engine.load_config`."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        self.lazy = isinstance(cfg, DictConfig)
        if self.lazy:
            cfg = scale_to_world_size(cfg, comm.get_world_size())
        else:
            cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        self.settings = s = train_settings(cfg)
        if not self.lazy:
            cfg.defrost()
            cfg.MODEL.DEVICE = s.device

        model = self.build_model(cfg)  # SyncBN made CPU-safe here, before the optimizer
        optimizer = self.build_optimizer(cfg, model)
        data_loader, self.sampler, self.samples_per_iter = self._build_train_loader()
        model = create_ddp_model(model, **s.ddp)
        self._trainer = AMPTrainer(
            model,
            data_loader,
            optimizer,
            device=s.device,
            amp=s.amp,
            iter_size=s.iter_size,
            clip_gradients=s.clip,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.ema = EMAHook(model, s.ema) if s.ema else None
        self.checkpointer = AtomicCheckpointer(
            model, s.output_dir, ema=self.ema, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = s.max_iter
        self.rank_states = None  # (iteration, [state of each rank]), see RankStateHook
        self.register_hooks(self.build_hooks())

    # ---- builders (classmethods, as in DefaultTrainer) -------------------------------------
    @classmethod
    def build_model(cls, cfg):
        """The model, on this process's device (:func:`training_device`, for yacs configs too:
        ``MODEL.DEVICE cuda`` runs on CPU where CUDA is missing), with its ``SyncBatchNorm``
        layers CPU-safe in a multi-process CPU run (before any optimizer holds them)."""
        device = train_settings(cfg).device
        if isinstance(cfg, CfgNode):
            if cfg.MODEL.DEVICE != device:
                cfg = cfg.clone()
                cfg.defrost()
                cfg.MODEL.DEVICE = device
            model = build_model(cfg)
        else:
            model = instantiate(cfg.model).to(device)
            logger.info(f"Model:\n{model}")
        prepare_sync_batchnorm(model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        if isinstance(cfg, CfgNode):
            return build_optimizer(cfg, model)
        cfg.optimizer.params.model = model
        return instantiate(cfg.optimizer)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        if isinstance(cfg, CfgNode):
            return build_lr_scheduler(cfg, optimizer)
        return instantiate(cfg.lr_multiplier)  # a ParamScheduler: hooks.LRScheduler wraps it

    def _build_train_loader(self):
        """(loader, resumable sampler or None, samples this rank takes per iteration)."""
        cfg, s = self.cfg, self.settings
        seed = s.seed if s.seed >= 0 else None
        if self.lazy:
            node = cfg.dataloader.train
            total = node.total_batch_size
            if "sampler" in node:
                return instantiate(node), None, 0
            args = {k: instantiate(v) for k, v in node.items() if k != "_target_"}
            check_image_files(args["dataset"], "training set")
            sampler = ResumableTrainingSampler(len(args["dataset"]), seed=seed)
            target = locate(node._target_) if isinstance(node._target_, str) else node._target_
            loader = target(**args, sampler=sampler)
        else:
            total = cfg.SOLVER.IMS_PER_BATCH
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN,
                filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                min_keypoints=(
                    cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
                    if cfg.MODEL.KEYPOINT_ON
                    else 0
                ),
            )
            check_image_files(dataset, "training set")
            sampler = None
            if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
                sampler = ResumableTrainingSampler(len(dataset), seed=seed)
            loader = build_detection_train_loader(
                cfg, mapper=RobustDatasetMapper(cfg, True), dataset=dataset, sampler=sampler
            )
        return loader, sampler, total // comm.get_world_size() * s.iter_size

    def build_train_loader(self, cfg):  # DefaultTrainer API; the trainer uses its own
        return self._build_train_loader()[0]

    def build_writers(self):
        return default_writers(self.settings.output_dir, self.max_iter)

    def build_hooks(self):
        s = self.settings
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if self.ema:
            ret.append(self.ema)
        ret.append(RankStateHook(s.checkpoint_period))  # every rank, before the checkpointer
        if comm.is_main_process():
            ret.append(
                hooks.PeriodicCheckpointer(
                    self.checkpointer, s.checkpoint_period, max_to_keep=s.max_to_keep
                )
            )

        def test_and_save_results():
            # evaluation leaves the RNGs alone: a run resumed from a checkpoint written just
            # before an evaluation draws what the uninterrupted run draws after it
            with preserved_rng(self._cuda):
                self._last_eval_results = self.test(
                    self.cfg, self.model, ema=self.ema, iteration=min(self.iter + 1, self.max_iter)
                )
            return self._last_eval_results

        ret.append(hooks.EvalHook(s.eval_period, test_and_save_results))
        if s.best_metric and comm.is_main_process():
            ret.append(
                hooks.BestCheckpointer(
                    s.eval_period, self.checkpointer, s.best_metric, mode=s.best_mode
                )
            )
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=s.log_period))
            if s.plot:
                ret.append(PlotHook(s.output_dir))
        return ret

    # ---- checkpoints ----------------------------------------------------------------------
    @property
    def _cuda(self):
        return self.settings.device.startswith("cuda")

    def rank_state(self):
        """This rank's resume state: its random number generators (CPU, and CUDA when training
        on it) and its data sampler (seed, drawn at random when ``train.seed < 0``)."""
        return {
            "rng": get_rng_state(self._cuda),
            "sampler": self.sampler.state_dict() if self.sampler is not None else None,
        }

    def state_dict(self):
        """Adds the optimizer (and grad scaler) and every rank's :meth:`rank_state`, so that a
        resumed run draws the same data, augmentations, RoI samples and dropout masks on every
        rank as an uninterrupted one (exactly so with ``num_workers=0``: loader workers seed
        themselves when they start). Tensors and plain containers only: loadable with
        ``torch.load(weights_only=True)``."""
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()  # optimizer and grad scaler
        gathered = self.rank_states
        if gathered is not None and gathered[0] == self.iter:
            ret["ranks"] = gathered[1]  # gathered by RankStateHook just before this save
        elif comm.get_world_size() == 1:
            ret["ranks"] = [self.rank_state()]
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        self._resume_state = _own_rank_state(state_dict)

    def resume_or_load(self, resume=True):
        """As in ``DefaultTrainer``; the EMA starts from the loaded weights. On resume also
        restores this rank's random number generators and data sampler (seed and position)."""
        self._resume_state = None
        self.checkpointer.resume_or_load(self.settings.init_checkpoint, resume=resume)
        if self.ema is not None and not self.ema.restored:
            self.ema.reset()  # from train.init_checkpoint's weights (or the initial ones)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
            state = self._resume_state or {}
            if self.sampler is not None:
                if state.get("sampler"):
                    self.sampler.load_state_dict(state["sampler"])
                self.sampler.resume_at(self.start_iter * self.samples_per_iter)
                logger.info(
                    f"Resuming at iteration {self.start_iter}; the data sampler skips "
                    f"{self.sampler.start} samples on this rank."
                )
            if state.get("rng"):
                set_rng_state(state["rng"])
            else:
                logger.info(
                    "The checkpoint holds no random number generator state for this rank: the "
                    "resumed run draws other random numbers than an uninterrupted one."
                )

    def train(self):
        TrainerBase.train(self, self.start_iter, self.max_iter)
        logger.info(f"Rank {comm.get_rank()} final weights sha256: {weights_digest(self.model)}")
        return getattr(self, "_last_eval_results", None)

    # ---- evaluation -----------------------------------------------------------------------
    @classmethod
    def build_test_loader(cls, cfg, dataset_name=None):
        if isinstance(cfg, CfgNode):
            return build_detection_test_loader(
                cfg, dataset_name, mapper=RobustDatasetMapper(cfg, False)
            )
        return instantiate(cfg.dataloader.test)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name=None, output_dir=None):
        if isinstance(cfg, CfgNode):
            return COCOEvaluator(dataset_name, output_dir=output_dir)
        node = cfg.dataloader.evaluator
        if output_dir and "output_dir" not in node:
            node = node.copy()
            node.output_dir = output_dir
        return instantiate(node)

    @classmethod
    def test(cls, cfg, model, evaluators=None, ema=None, iteration=None):
        """Evaluate ``model`` (with the EMA weights if ``ema``) on the test set(s).

        Results are saved to ``<output_dir>/inference/results[_iter<N>].json``.
        Returns ``{metric_group: {metric: value}}`` (one dataset) or ``{dataset: {...}}``.
        """
        s = train_settings(cfg)
        inference_dir = os.path.join(s.output_dir, "inference")
        suffix = f"_iter{iteration:07d}" if iteration else ""
        names = list(cfg.DATASETS.TEST) if isinstance(cfg, CfgNode) else [None]
        results = {}
        for i, name in enumerate(names):
            loader = cls.build_test_loader(cfg, name)  # loads (and generates) the data first
            evaluator = (
                evaluators[i]
                if evaluators
                else cls.build_evaluator(cfg, name, output_dir=inference_dir)
            )
            label = name or str(cfg.dataloader.test.dataset.get("names", "test"))
            json_path = os.path.join(
                inference_dir,
                f"results{suffix}.json" if len(names) == 1 else f"results_{label}{suffix}.json",
            )
            if ema is not None:
                with ema.swapped():
                    results[label] = evaluate(model, loader, evaluator, label, json_path)
            else:
                results[label] = evaluate(model, loader, evaluator, label, json_path)
        return next(iter(results.values())) if len(results) == 1 else results


def _own_rank_state(state_dict):
    """This rank's entry of a checkpoint's per-rank resume states (None when it has none for
    this world size). Checkpoints of older versions held one RNG state, for one process."""
    ranks = state_dict.get("ranks")
    if ranks is not None and len(ranks) == comm.get_world_size():
        return ranks[comm.get_rank()]
    if ranks is not None:
        logger.info(
            f"The checkpoint was written by {len(ranks)} processes, not "
            f"{comm.get_world_size()}: random number generators are not restored."
        )
        return None
    if "rng" in state_dict and comm.get_world_size() == 1:
        return {"rng": state_dict["rng"]}
    return None
