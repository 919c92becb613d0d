"""The :class:`~fpt.config.run.RunConfig` of a LazyConfig (``.py``, or ``.yaml`` saved by
``LazyConfig.save``): its ``train``, ``model``, ``optimizer``, ``lr_multiplier`` and
``dataloader`` nodes, as in detectron2's ``tools/lazyconfig_train_net.py``."""

import logging

from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyConfig, instantiate
from detectron2.config.instantiate import locate
from detectron2.evaluation import COCOEvaluator

from ..data import check_image_files
from ..data.samplers import ResumableSampler, ResumableTrainingSampler
from .errors import ConfigError
from .loading import TEST_DEFAULTS
from .loggers import check_loggers
from .overrides import _find_keys
from .run import RunConfig

__all__ = ["LazyRunConfig", "fixed_input_size", "scale_to_world_size"]

logger = logging.getLogger(__name__)


class LazyRunConfig(RunConfig):
    kind = "LazyConfig"
    model_key = "cfg.model"
    weights_key = "train.init_checkpoint"
    tta_key = "test.tta"

    def _select(self, key, default=None):
        return OmegaConf.select(self.cfg, key, default=default)

    @property
    def device(self):
        return self._select("train.device")

    @property
    def weights(self):
        return self._select("train.init_checkpoint", default="")

    @property
    def output_dir(self):
        return self.cfg.train.output_dir

    def _dataset_names(self, split):
        node = self._select(f"dataloader.{split}.dataset")
        value = node.get("names") if hasattr(node, "get") else None
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)

    @property
    def train_dataset_names(self):
        return self._dataset_names("train")

    @property
    def test_dataset_names(self):
        return self._dataset_names("test")

    @property
    def datasets_to_register(self):
        """``datasets = [dict(name=..., json_file=..., image_root=...)]``: COCO jsons."""
        entries = self.cfg.datasets if "datasets" in self.cfg else []
        return [(e.name, e.json_file, e.image_root) for e in entries]

    @property
    def config_input_format(self):
        return self._select("dataloader.test.mapper.image_format", default="BGR")

    @property
    def visualize(self):
        return self.cfg.train.visualize.num_images, self.cfg.train.visualize.score_thresh

    @property
    def cudnn_benchmark(self):
        """``train.cudnn_benchmark``; its default, None, means "when every batch has the same
        input size" (:func:`fixed_input_size`, e.g. the LSJ configs)."""
        value = self.cfg.train.get("cudnn_benchmark")
        return fixed_input_size(self.cfg) if value is None else bool(value)

    @property
    def total_batch_size(self):
        return self.cfg.dataloader.train.total_batch_size

    @property
    def evaluation_sets(self):
        return [(None, str(self.cfg.dataloader.test.dataset.get("names", "test")))]

    def _train_fields(self):
        t = self.cfg.train
        clip = t.clip_gradients
        return dict(
            output_dir=t.output_dir,
            init_checkpoint=t.init_checkpoint,
            max_iter=t.max_iter,
            checkpoint_period=t.checkpointer.period,
            max_to_keep=t.checkpointer.get("max_to_keep", 100),
            eval_period=t.eval_period,
            log_period=t.log_period,
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
            compile=(
                dict(mode=t.compile.mode, dynamic=t.compile.dynamic, backend=t.compile.backend)
                if t.compile.enabled
                else None
            ),
            cpu_malloc_cache=bool(t.cpu_malloc_cache),
            freeze=list(t.freeze),
            val_loss_period=t.val_loss_period,
            val_loss_batches=t.val_loss_batches,
            loggers=check_loggers(
                t.loggers,
                OmegaConf.to_container(t.logger_options),
                "train.loggers",
                "train.logger_options",
            ),
        )

    def scaled_to_world_size(self, world_size):
        scale_to_world_size(self.cfg, world_size)
        return self

    @property
    def tta_settings(self):
        # a config made without load_config (which adds the ``test`` node) has the defaults
        t = OmegaConf.create(TEST_DEFAULTS["tta"])
        given = self._select("test.tta")
        if given is not None:
            t.merge_with(given)
        return dict(
            enabled=bool(t.enabled),
            min_sizes=list(t.min_sizes) if t.min_sizes is not None else None,
            max_size=t.max_size,
            scales=list(t.scales),
            flip=bool(t.flip),
        )

    def test_augmentations(self):
        augs = self._select("dataloader.test.mapper.augmentations")
        if augs is None:
            logger.warning("config has no dataloader.test.mapper.augmentations: no test resize")
        return T.AugmentationList([instantiate(a) for a in (augs or [])])

    def build_model(self, device=None):
        if "model" not in self.cfg:
            raise ConfigError("LazyConfig has no 'model' to build")
        model = instantiate(self.cfg.model)
        return model if device is None else model.to(device)

    def build_optimizer(self, model):
        self.cfg.optimizer.params.model = model
        return instantiate(self.cfg.optimizer)

    def build_lr_scheduler(self, optimizer):
        return instantiate(self.cfg.lr_multiplier)  # a ParamScheduler, on the fraction of training

    def build_train_loader(self, make_sampler):
        """A ``dataloader.train.sampler`` of class :class:`~fpt.data.samplers.ResumableSampler`
        (e.g. ``L(RepeatFactorSampler)(repeat_thresh=0.001)``) gets the training set and the
        trainer's seed; another sampler of the config's own is built as it is (not resumable)."""
        node = self.cfg.dataloader.train
        own = node.get("sampler")
        sampler_class = _target(own) if own is not None else ResumableTrainingSampler
        if not (isinstance(sampler_class, type) and issubclass(sampler_class, ResumableSampler)):
            return instantiate(node), None
        args = {k: instantiate(v) for k, v in node.items() if k not in ("_target_", "sampler")}
        check_image_files(args["dataset"], "training set")
        options = (
            {k: instantiate(v) for k, v in own.items() if k != "_target_"}
            if own is not None
            else {}
        )
        sampler = make_sampler(args["dataset"], sampler_class, **options)
        return _target(node)(**args, sampler=sampler), sampler

    def build_test_loader(self, dataset_name=None):
        return instantiate(self.cfg.dataloader.test)

    def test_set(self, dataset_name=None):
        test = self.cfg.dataloader.test
        return instantiate(test.dataset), instantiate(test.mapper)

    def val_loss_set(self):
        train, test = self.cfg.dataloader.train, self.cfg.dataloader.test
        mapper = OmegaConf.create(train.mapper, flags={"allow_objects": True})
        augmentations = test.mapper.get("augmentations", None)
        mapper.augmentations = [] if augmentations is None else augmentations
        return instantiate(test.dataset), instantiate(mapper)

    def build_evaluator(self, dataset_name=None, output_dir=None):
        node = self._select("dataloader.evaluator")
        if node is None:  # detectron2's evaluator for a COCO-format test set
            return COCOEvaluator(self.test_dataset_names[0], output_dir=output_dir)
        if output_dir and "output_dir" not in node:
            node = node.copy()
            node.output_dir = output_dir
        return instantiate(node)

    def set_weights(self, path):
        self.cfg.train.init_checkpoint = path

    def add_datasets_to_register(self, entries):
        new = {name: dict(name=name, json_file=j, image_root=r) for name, j, r in entries}
        kept = [dict(e) for e in self.cfg.get("datasets", None) or [] if e.name not in new]
        self.cfg.datasets = kept + list(new.values())

    def use_datasets(self, train=None, test=None):
        for split, names in (("train", train), ("test", test)):
            if not names:
                continue
            node = self._select(f"dataloader.{split}.dataset")
            if node is None or "names" not in node:
                raise ConfigError(
                    f"dataloader.{split}.dataset of this config takes no dataset names: "
                    f"cannot use {', '.join(names)}"
                )
            node.names = names[0] if len(names) == 1 else list(names)

    def class_count_keys(self):
        if "model" not in self.cfg:
            return []
        tree = OmegaConf.to_container(self.cfg.model, resolve=False)
        return [
            (f"model.{key}", value, "stuff" if "sem_seg_head" in key.split(".") else "thing")
            for key, value in _find_keys(tree, ("num_classes",))
            if type(value) is int and not key.startswith("backbone.")
        ]

    def set_option(self, key, value):
        OmegaConf.update(self.cfg, key, value, merge=False)

    def save(self, path):
        LazyConfig.save(self.cfg, path)


def _target(node):
    """The callable a LazyCall node names (its ``_target_``, located when a string)."""
    return locate(node._target_) if isinstance(node._target_, str) else node._target_


def scale_to_world_size(cfg, world_size):
    """LazyConfig version of ``DefaultTrainer.auto_scale_workers`` (in place; returns cfg).

    With ``train.reference_world_size = R > 0`` and ``W`` processes: total batch x W/R,
    ``optimizer.lr`` x W/R, ``max_iter``, ``eval_period`` and ``checkpointer.period`` x R/W.
    The LR multiplier is defined on the fraction of training, so it needs no change.
    """
    ref = cfg.train.reference_world_size
    if not ref or ref == world_size:
        return cfg
    batch = cfg.dataloader.train.total_batch_size
    if batch % ref:
        raise ConfigError(
            f"dataloader.train.total_batch_size={batch} is not divisible by "
            f"train.reference_world_size={ref}"
        )
    scale = world_size / ref
    cfg.dataloader.train.total_batch_size = int(round(batch * scale))
    cfg.optimizer.lr = cfg.optimizer.lr * scale
    cfg.train.max_iter = int(round(cfg.train.max_iter / scale))
    cfg.train.eval_period = int(round(cfg.train.eval_period / scale))
    cfg.train.checkpointer.period = int(round(cfg.train.checkpointer.period / scale))
    cfg.train.reference_world_size = world_size
    logger.info(
        f"Auto-scaling the config to batch_size={cfg.dataloader.train.total_batch_size}, "
        f"learning_rate={cfg.optimizer.lr}, max_iter={cfg.train.max_iter}."
    )
    return cfg


def fixed_input_size(cfg):
    """Whether a LazyConfig feeds the model one input size only: its backbone pads every batch
    to a fixed square (ViTDet's ``SimpleFeaturePyramid(square_pad=1024)``, as in LSJ), or its
    training augmentations end in a padded ``FixedSizeCrop`` (or ``ResizeScaleCrop``)."""
    backbone = OmegaConf.select(cfg, "model.backbone", default=None)
    if backbone is not None and (backbone.get("square_pad") or 0) > 0:
        return True
    augs = OmegaConf.select(cfg, "dataloader.train.mapper.augmentations", default=None) or []
    last = augs[-1] if len(augs) else None
    if last is None or not hasattr(last, "get"):
        return False
    target = last.get("_target_")
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    fixed_crops = ("FixedSizeCrop", "ResizeScaleCrop")
    return name.rsplit(".", 1)[-1] in fixed_crops and last.get("pad", True) is True
