"""``Trainer``: detectron2's ``DefaultTrainer`` workflow for LazyConfigs (.py) and yacs configs
(.yaml).

Every question to the config goes through :class:`fpt.config.RunConfig` (model, optimizer, LR
schedule, loaders, evaluators, settings); this class keeps only what ``DefaultTrainer`` lacks,
each override saying why: a train loop with AMP on CPU and CUDA, gradient accumulation and
clipping (:class:`~.train_loop.AccumulatingAMPTrainer`), EMA, atomic checkpoints, a resumable data
sampler, per-rank RNG state in checkpoints, best-checkpoint tracking, results JSON and a metrics
plot.
"""

import functools
import hashlib
import logging
import os
import weakref

from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.utils import comm

from fpt.config import RunConfig
from fpt.data.samplers import build_resumable_sampler
from fpt.evaluation import evaluate
from fpt.utils.device import training_device

from .checkpoint import AtomicCheckpointer
from .ddp import create_ddp_model, prepare_sync_batchnorm
from fpt.utils.compile import compile_model

from .finetune import ValidationLossHook, freeze_parameters
from .hooks import CompileHook, EMAHook, LRScheduler, PlotHook, RankStateHook, own_rank_state
from .preemption import SignalCheckpointer, watcher
from .rng import get_rng_state, preserved_rng, set_rng_state
from .tracking import PeriodicWriter, build_writers
from .train_loop import AccumulatingAMPTrainer

__all__ = ["Trainer", "weights_digest"]

logger = logging.getLogger(__name__)


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
    LazyConfigs and yacs configs. ``cfg`` comes from :func:`fpt.config.load_config` (or is a
    :class:`~fpt.config.RunConfig`); ``self.cfg`` is the config scaled to the world size,
    ``self.run`` its ``RunConfig`` and ``self.settings`` its ``train_settings()``."""

    def __init__(self, cfg):
        # why: DefaultTrainer's reads yacs keys, and its loop has no accumulation, clipping, EMA
        # or CPU AMP, and starts the loader before a resumed sampler knows where to start
        TrainerBase.__init__(self)
        self.run = run = RunConfig.of(cfg).scaled_to_world_size(comm.get_world_size())
        self.cfg = run.cfg
        self.settings = s = run.train_settings()
        model = self.build_model(run)  # SyncBN made CPU-safe here, before the optimizer
        self.compiled_parts = (
            compile_model(model, **s.compile, cache_dir=os.path.join(s.output_dir, "compile_cache"))
            if s.compile
            else []
        )
        frozen = freeze_parameters(model, s.freeze)  # train.freeze, before the optimizer
        if frozen:
            logger.info(frozen)
        optimizer = self.build_optimizer(run, model)
        data_loader, self.sampler = self._build_train_loader()
        # samples this rank takes per iteration (where a resumed sampler starts)
        self.samples_per_iter = run.total_batch_size // comm.get_world_size() * s.iter_size
        model = create_ddp_model(model, **s.ddp)
        self._trainer = AccumulatingAMPTrainer(
            model,
            data_loader,
            optimizer,
            device=s.device,
            amp=s.amp,
            iter_size=s.iter_size,
            clip_gradients=s.clip,
            compiled_parts=self.compiled_parts,
        )
        self.scheduler = self.build_lr_scheduler(run, optimizer)
        self.ema = EMAHook(model, s.ema) if s.ema else None
        self.checkpointer = AtomicCheckpointer(
            model, s.output_dir, ema=self.ema, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = s.max_iter
        self.rank_states = None  # (iteration, [state of each rank]), see RankStateHook
        self.register_hooks(self.build_hooks())

    # ---- builders (classmethods, as in DefaultTrainer) -------------------------------------
    # why, for all: DefaultTrainer's build from yacs keys only; these take either config kind
    @classmethod
    def build_model(cls, cfg):
        """The model, on this process's device (:func:`~fpt.utils.device.training_device`, for
        yacs configs too: ``MODEL.DEVICE cuda`` runs on CPU where CUDA is missing), with its
        ``SyncBatchNorm`` layers CPU-safe in a multi-process CPU run (before any optimizer
        holds them)."""
        run = RunConfig.of(cfg)
        model = run.build_model(training_device(run.device))
        logger.info(f"Model:\n{model}")
        prepare_sync_batchnorm(model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return RunConfig.of(cfg).build_optimizer(model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return RunConfig.of(cfg).build_lr_scheduler(optimizer)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name=None):
        return RunConfig.of(cfg).build_test_loader(dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name=None, output_dir=None):
        return RunConfig.of(cfg).build_evaluator(dataset_name, output_dir)

    def _build_train_loader(self):
        """(loader, its resumable sampler or None when the config has its own, other sampler)."""
        seed = self.settings.seed
        make_sampler = functools.partial(build_resumable_sampler, seed=seed if seed >= 0 else None)
        return self.run.build_train_loader(make_sampler)

    def build_train_loader(self, cfg):  # DefaultTrainer API; __init__ also needs the sampler
        return self._build_train_loader()[0]

    def build_writers(self):
        """The console printer and ``train.loggers``' writers (why: DefaultTrainer's reads
        cfg.OUTPUT_DIR, yacs, and knows no trackers)."""
        return build_writers(self.settings.output_dir, self.max_iter, self.settings.loggers)

    def build_hooks(self):
        """DefaultTrainer's hooks from our settings (DefaultTrainer's read yacs keys), plus EMA,
        per-rank resume state, best checkpoint, the metrics plot and, in a SLURM job, a checkpoint
        on its preemption and time-out signals; evaluation leaves the random number generators
        alone."""
        s = self.settings
        ret = [hooks.IterationTimer(), LRScheduler()]
        if self.compiled_parts:
            ret.append(CompileHook(self.compiled_parts))
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
                    self.run, self.model, ema=self.ema, iteration=min(self.iter + 1, self.max_iter)
                )
            return self._last_eval_results

        ret.append(hooks.EvalHook(s.eval_period, test_and_save_results))
        if s.val_loss_period > 0:  # every rank (a collective), before the writers
            ret.append(
                ValidationLossHook(
                    s.val_loss_period,
                    *self.run.val_loss_set(),
                    batch_size=self.run.total_batch_size // comm.get_world_size(),
                    num_batches=s.val_loss_batches,
                    cuda=self._cuda,
                )
            )
        if s.best_metric and comm.is_main_process():
            ret.append(
                hooks.BestCheckpointer(
                    s.eval_period, self.checkpointer, s.best_metric, mode=s.best_mode
                )
            )
        if comm.is_main_process():
            ret.append(PeriodicWriter(self.build_writers(), period=s.log_period))
            if s.plot:
                ret.append(PlotHook(s.output_dir))
        if watcher.installed:  # a SLURM job: checkpoint and stop on its signals (last hook)
            ret.append(SignalCheckpointer())
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
        """Adds the train loop's state (optimizer, grad scaler) and every rank's
        :meth:`rank_state` (why: DefaultTrainer 0.6 saves neither; with them a resumed run draws
        the same data, augmentations, RoI samples and dropout masks on every rank as an
        uninterrupted one, exactly so with ``num_workers=0``: loader workers seed themselves when
        they start). Tensors and plain containers only: loadable with
        ``torch.load(weights_only=True)``."""
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        gathered = self.rank_states
        if gathered is not None and gathered[0] == self.iter:
            ret["ranks"] = gathered[1]  # gathered by RankStateHook just before this save
        elif comm.get_world_size() == 1:
            ret["ranks"] = [self.rank_state()]
        return ret

    def load_state_dict(self, state_dict):  # why: the counterpart of state_dict
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        self._resume_state = own_rank_state(state_dict)

    def resume_or_load(self, resume=True):
        """As in ``DefaultTrainer`` (why: which reads ``MODEL.WEIGHTS``, yacs); the EMA starts
        from the loaded weights. On resume also restores this rank's random number generators
        and data sampler (seed and position)."""
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
        """Train; returns the last evaluation's results (why: DefaultTrainer's returns them only
        when checking yacs ``TEST.EXPECTED_RESULTS``) and logs the final weights' digest."""
        TrainerBase.train(self, self.start_iter, self.max_iter)
        logger.info(f"Rank {comm.get_rank()} final weights sha256: {weights_digest(self.model)}")
        return getattr(self, "_last_eval_results", None)

    # ---- evaluation -----------------------------------------------------------------------
    @classmethod
    def test(cls, cfg, model, evaluators=None, ema=None, iteration=None):
        """Evaluate ``model`` (with the EMA weights if ``ema``) on the test set(s). (Why:
        DefaultTrainer's reads yacs keys, and has no EMA or results file.)

        Results are saved to ``<output_dir>/inference/results[_iter<N>].json``.
        Returns ``{metric_group: {metric: value}}`` (one dataset) or ``{dataset: {...}}``.
        With ``test.tta.enabled`` (``TEST.AUG.ENABLED``) every evaluation is made with
        test-time augmentation (:meth:`fpt.config.RunConfig.with_tta`).
        """
        run = RunConfig.of(cfg)
        model = run.with_tta(model)
        inference_dir = os.path.join(run.output_dir, "inference")
        suffix = f"_iter{iteration:07d}" if iteration else ""
        sets = run.evaluation_sets
        results = {}
        for i, (name, label) in enumerate(sets):
            loader = cls.build_test_loader(run, name)  # loads (and generates) the data first
            evaluator = (
                evaluators[i]
                if evaluators
                else cls.build_evaluator(run, name, output_dir=inference_dir)
            )
            json_path = os.path.join(
                inference_dir,
                f"results{suffix}.json" if len(sets) == 1 else f"results_{label}{suffix}.json",
            )
            if ema is not None:
                with ema.swapped():
                    results[label] = evaluate(model, loader, evaluator, label, json_path)
            else:
                results[label] = evaluate(model, loader, evaluator, label, json_path)
        return next(iter(results.values())) if len(results) == 1 else results
