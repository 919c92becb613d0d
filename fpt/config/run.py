"""``RunConfig``: one object that answers every question the engine, the predictor and the demo
ask of a loaded config, whichever kind it is.

Which key answers which question:

=====================  ==========================================  ===========================
question               LazyConfig (:mod:`.lazy_run`)               yacs (:mod:`.yacs_run`)
=====================  ==========================================  ===========================
device                 ``train.device``                            ``MODEL.DEVICE``
checkpoint             ``train.init_checkpoint``                   ``MODEL.WEIGHTS``
output dir             ``train.output_dir``                        ``OUTPUT_DIR``
datasets               ``dataloader.{train,test}.dataset.names``   ``DATASETS.TRAIN/TEST``
datasets to register   ``datasets`` (name, json_file, image_root)  ``DATASETS.REGISTER_COCO``
input format           ``dataloader.test.mapper.image_format``     ``INPUT.FORMAT``
test resize            ``dataloader.test.mapper.augmentations``    ``INPUT.*_SIZE_TEST``
test-time augmentation ``test.tta``                                ``TEST.AUG``
model                  ``instantiate(model)``                      ``build_model`` (registries)
optimizer, LR          ``optimizer``, ``lr_multiplier``            ``SOLVER.*``
loaders, evaluator     ``dataloader.*``                            ``DATASETS``, ``COCOEvaluator``
train settings         ``train.*``                                 ``SOLVER.*``, ``TEST.*``...
=====================  ==========================================  ===========================

This module and the two it dispatches to are the only places that tell the kinds apart (with
:func:`is_lazy_config`; also :mod:`.overrides` and :mod:`.loading`, which parse them).
"""

from types import SimpleNamespace

from omegaconf import DictConfig

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata

from ..data import dataset_classes, register_coco
from ..utils.device import training_device
from ..utils.text import first_line
from .errors import ConfigError

__all__ = ["RunConfig", "is_lazy_config"]


def is_lazy_config(cfg):
    """True for a LazyConfig (omegaconf) object, False for a yacs ``CfgNode``."""
    return isinstance(cfg, DictConfig)


class RunConfig:
    """
    A loaded config (:func:`fpt.config.load_config`) with the questions asked of it as
    attributes and methods. ``RunConfig(cfg)`` gives a :class:`~.lazy_run.LazyRunConfig` or a
    :class:`~.yacs_run.YacsRunConfig`; :meth:`of` also takes a ``RunConfig`` (returned as is),
    so functions may take either. ``cfg`` is the config itself.

    Attributes (each kind's keys: see the module's table): ``device`` (as configured, may be
    None), ``weights`` (the checkpoint to load, "" for none) and ``weights_key`` (its key, for
    messages), ``model_key``, ``output_dir``, ``train_dataset_names``, ``test_dataset_names``,
    ``datasets_to_register``, ``config_input_format``, ``visualize`` (number of test images to
    draw after training, score threshold), ``cudnn_benchmark``, ``total_batch_size``,
    ``evaluation_sets`` (``[(dataset name or None, label)]``, one test loader each).
    """

    kind = ""  # "LazyConfig" or "yacs"
    model_key = ""  # what builds the model, for messages
    weights_key = ""  # the key of the checkpoint to load, for messages
    tta_key = ""  # the test-time augmentation settings, for messages

    def __new__(cls, cfg=None):  # (no argument when unpickled: a worker process gets one)
        if cls is RunConfig:
            from .lazy_run import LazyRunConfig
            from .yacs_run import YacsRunConfig

            cls = LazyRunConfig if is_lazy_config(cfg) else YacsRunConfig
        return super().__new__(cls)

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def of(cls, cfg):
        """``cfg`` as a :class:`RunConfig` (itself when it is one already)."""
        return cfg if isinstance(cfg, RunConfig) else RunConfig(cfg)

    def __repr__(self):
        return f"{type(self).__name__}({self.kind} config)"

    # ---- answered the same way for both kinds ----
    @property
    def dataset_names(self):
        """Training then test dataset names (all must be registered before a run)."""
        return self.train_dataset_names + self.test_dataset_names

    @property
    def metadata(self):
        """Class names, colors, category ids of the first test dataset (``unknown`` when none).
        A COCO json of :attr:`datasets_to_register` (a fine-tuning run's saved config, in the
        demo) is registered first; its class names are read from its categories."""
        names = self.test_dataset_names
        if not (names and names[0]):
            return Metadata(name="unknown")
        entry = {e[0]: e for e in self.datasets_to_register}.get(names[0])
        if entry is not None and names[0] not in DatasetCatalog.list():
            register_coco(*entry)
        dataset_classes(names[0])
        return MetadataCatalog.get(names[0])

    def with_tta(self, model, enabled=None):
        """``model`` wrapped for test-time augmentation (:func:`fpt.modeling.tta.with_tta`) with
        the views of :attr:`tta_settings` if ``enabled`` (None: as the config says), else
        ``model`` itself. A model or a setting it cannot take is a :class:`ConfigError`."""
        from ..modeling.tta import with_tta

        settings = self.tta_settings
        if not (settings.pop("enabled") if enabled is None else enabled):
            return model
        settings.pop("enabled", None)
        try:
            return with_tta(model, **settings)
        except ValueError as e:
            raise ConfigError(f"{self.tta_key}: {first_line(e)}") from None

    def input_format(self, model=None):
        """The model's channel order: its ``input_format`` attribute, else the config's."""
        return getattr(model, "input_format", None) or self.config_input_format

    def train_settings(self):
        """What the trainer reads, as one namespace: ``output_dir init_checkpoint max_iter
        checkpoint_period max_to_keep eval_period log_period device amp iter_size clip ema
        best_metric best_mode ddp plot seed compile cpu_malloc_cache freeze val_loss_period
        val_loss_batches loggers``; ``device`` is this process's (:func:`~fpt.utils.device.training_device`),
        ``loggers`` ``{name: options}`` (:func:`~fpt.config.loggers.check_loggers`)."""
        return SimpleNamespace(**self._train_fields(), device=str(training_device(self.device)))

    @property
    def compile_settings(self):
        """``train.compile`` (``SOLVER.COMPILE``) as ``compile_model`` arguments (mode,
        dynamic), or None when off."""
        return self._train_fields()["compile"]

    # ---- answered by each kind (see lazy_run.py, yacs_run.py) ----
    def _train_fields(self):
        raise NotImplementedError

    @property
    def tta_settings(self):
        """Test-time augmentation, as a new dict: ``enabled``, then the arguments of
        :func:`fpt.modeling.tta.with_tta` (``min_sizes``, ``max_size``, ``scales``, ``flip``)."""
        raise NotImplementedError

    def scaled_to_world_size(self, world_size):
        """The config for ``world_size`` processes (batch, LR, iterations scaled from the
        configured reference world size; unchanged without one)."""
        raise NotImplementedError

    def test_augmentations(self):
        """The test-time resize, as a ``T.AugmentationList``."""
        raise NotImplementedError

    def build_model(self, device=None):
        """A new model, on ``device`` when given."""
        raise NotImplementedError

    def build_optimizer(self, model):
        raise NotImplementedError

    def build_lr_scheduler(self, optimizer):
        """An LR scheduler, or a ``ParamScheduler`` (``hooks.LRScheduler`` wraps it)."""
        raise NotImplementedError

    def build_train_loader(self, make_sampler):
        """``(loader, sampler)``: the training loader; with the config's default sampler or a
        :class:`~fpt.data.samplers.ResumableSampler` (repeat-factor sampling) it draws from
        ``make_sampler(dataset_dicts, sampler_class, **options)`` (returned too), else (another
        sampler of the config's own) the sampler is None."""
        raise NotImplementedError

    def build_test_loader(self, dataset_name=None):
        """The test loader of one of :attr:`evaluation_sets`."""
        raise NotImplementedError

    def test_set(self, dataset_name=None):
        """``(dataset dicts, mapper)`` of the test set (the first one when not named), for
        callers that take a part of it (``tools/export_model.py --run-eval``)."""
        raise NotImplementedError

    def build_evaluator(self, dataset_name=None, output_dir=None):
        raise NotImplementedError

    def val_loss_set(self):
        """``(dataset dicts, mapper)`` of the first test set for validation losses: the training
        mapper (annotations kept) with the test-time resize in place of the training
        augmentations."""
        raise NotImplementedError

    def set_weights(self, path):
        """Make ``path`` the checkpoint to load (:attr:`weights`), in the config itself."""
        raise NotImplementedError

    # ---- fine-tuning on registered datasets (see fpt.config.classes) ----
    def add_datasets_to_register(self, entries):
        """Add ``(name, json_file, image_root)`` COCO jsons to :attr:`datasets_to_register`, in
        the config itself (so that a saved config registers them again: evaluation, demo); an
        entry of the same name is replaced."""
        raise NotImplementedError

    def use_datasets(self, train=None, test=None):
        """Train on the datasets named in ``train`` and test on ``test`` (lists of names; None
        keeps the config's)."""
        raise NotImplementedError

    def class_count_keys(self):
        """``[(key, value, kind)]``: each class-count option of the model with its value, kind
        "thing" (instance heads: R-CNN, Cascade, RetinaNet, DETR) or "stuff" (semantic heads).
        Options that follow another one (LazyConfig interpolations) are left out."""
        raise NotImplementedError

    def set_option(self, key, value):
        """Set one option (a dotted key, as in overrides) in the config itself."""
        raise NotImplementedError

    def save(self, path):
        """Write the full config to ``path`` (loadable by :func:`fpt.config.load_config`)."""
        raise NotImplementedError
