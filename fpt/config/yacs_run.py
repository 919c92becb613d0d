"""The :class:`~fpt.config.run.RunConfig` of a yacs config (a detectron2 ``CfgNode``, with our
nodes from :func:`fpt.config.loading.add_training_config` and the models' ``add_*_config``):
detectron2's registry builders, as its ``DefaultTrainer`` and ``DefaultPredictor`` use them."""

import torch

import detectron2.data.transforms as T
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, LVISEvaluator, SemSegEvaluator
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping

from ..data import RobustDatasetMapper, check_image_files
from ..data.samplers import RepeatFactorSampler
from ..solver import get_default_optimizer_params
from .loggers import check_loggers
from .run import RunConfig

__all__ = ["YacsRunConfig"]

# the class-count keys of each meta-architecture: (key, "thing" or "stuff" classes)
_CLASS_COUNT_KEYS = {
    "GeneralizedRCNN": [("MODEL.ROI_HEADS.NUM_CLASSES", "thing")],
    "RetinaNet": [("MODEL.RETINANET.NUM_CLASSES", "thing")],
    "DETR": [("MODEL.DETR.NUM_CLASSES", "thing")],
    "SemanticSegmentor": [("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff")],
    "PanopticFPN": [
        ("MODEL.ROI_HEADS.NUM_CLASSES", "thing"),
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff"),
    ],
}


class YacsRunConfig(RunConfig):
    kind = "yacs"
    model_key = "cfg.MODEL"
    weights_key = "MODEL.WEIGHTS"
    tta_key = "TEST.AUG"

    @property
    def device(self):
        return self.cfg.MODEL.DEVICE

    @property
    def weights(self):
        return self.cfg.MODEL.WEIGHTS

    @property
    def output_dir(self):
        return self.cfg.OUTPUT_DIR

    @property
    def train_dataset_names(self):
        return list(self.cfg.DATASETS.TRAIN)

    @property
    def test_dataset_names(self):
        return list(self.cfg.DATASETS.TEST)

    @property
    def datasets_to_register(self):
        """``DATASETS.REGISTER_COCO``: ``[[name, json_file, image_root], ...]``."""
        return [tuple(e) for e in self.cfg.DATASETS.get("REGISTER_COCO", [])]

    visualize = (0, 0.5)  # no key: draw nothing unless asked (train_net.py --visualize N)

    @property
    def config_input_format(self):
        return self.cfg.INPUT.FORMAT

    @property
    def cudnn_benchmark(self):
        return bool(self.cfg.CUDNN_BENCHMARK)  # detectron2's key, default False

    @property
    def total_batch_size(self):
        return self.cfg.SOLVER.IMS_PER_BATCH

    @property
    def evaluation_sets(self):
        return [(name, name) for name in self.cfg.DATASETS.TEST]

    def _train_fields(self):
        cfg = self.cfg
        return dict(
            output_dir=cfg.OUTPUT_DIR,
            init_checkpoint=cfg.MODEL.WEIGHTS,
            max_iter=cfg.SOLVER.MAX_ITER,
            checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
            max_to_keep=None,
            eval_period=cfg.TEST.EVAL_PERIOD,
            log_period=20,
            amp=cfg.SOLVER.AMP.ENABLED,
            iter_size=cfg.SOLVER.ITER_SIZE,
            clip=None,  # SOLVER.CLIP_GRADIENTS is applied by detectron2's build_optimizer
            ema=cfg.MODEL_EMA.DECAY if cfg.MODEL_EMA.ENABLED else None,
            best_metric=cfg.TEST.BEST_METRIC,
            best_mode="max",
            ddp=dict(broadcast_buffers=False),
            plot=True,
            seed=cfg.SEED,
            cpu_malloc_cache=cfg.CPU_MALLOC_CACHE,
            compile=(
                dict(mode=cfg.SOLVER.COMPILE.MODE, dynamic=None, backend="inductor")
                if cfg.SOLVER.COMPILE.ENABLED
                else None
            ),
            freeze=list(cfg.SOLVER.FREEZE),
            val_loss_period=cfg.TEST.VAL_LOSS_PERIOD,
            val_loss_batches=cfg.TEST.VAL_LOSS_BATCHES,
            loggers=check_loggers(
                cfg.LOGGERS,
                {
                    name.lower(): {k.lower(): v for k, v in opts.items()}
                    for name, opts in cfg.LOGGER_OPTIONS.items()
                },
                "LOGGERS",
                "LOGGER_OPTIONS",
            ),
        )

    def scaled_to_world_size(self, world_size):
        cfg = DefaultTrainer.auto_scale_workers(self.cfg, world_size)
        return self if cfg is self.cfg else YacsRunConfig(cfg)

    @property
    def tta_settings(self):
        """detectron2's ``TEST.AUG``: absolute sizes (``MIN_SIZES``, ``MAX_SIZE``) only."""
        aug = self.cfg.TEST.AUG
        return dict(
            enabled=bool(aug.ENABLED),
            min_sizes=list(aug.MIN_SIZES),
            max_size=aug.MAX_SIZE,
            scales=None,
            flip=bool(aug.FLIP),
        )

    def test_augmentations(self):
        size, max_size = self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST
        return T.AugmentationList(
            [T.ResizeShortestEdge([size, size], max_size)] if size > 0 else []
        )

    def build_model(self, device=None):
        """``build_model`` puts the model on ``MODEL.DEVICE``: a copy of the config names
        ``device`` (the caller's config is left as it was)."""
        cfg = self.cfg
        if device is not None and cfg.MODEL.DEVICE != str(device):
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = str(device)
        return build_model(cfg)

    def build_optimizer(self, model):
        """detectron2's ``build_optimizer`` (SGD from ``SOLVER.*``, gradient clipping from
        ``SOLVER.CLIP_GRADIENTS``); for ``META_ARCHITECTURE: DETR`` the parameters whose name
        holds "backbone" get ``SOLVER.BACKBONE_MULTIPLIER`` times the learning rate (official
        DETR's ``lr_backbone``)."""
        solver = self.cfg.SOLVER
        factor = solver.BACKBONE_MULTIPLIER if self.cfg.MODEL.META_ARCHITECTURE == "DETR" else 1
        params = get_default_optimizer_params(
            model,
            base_lr=solver.BASE_LR,
            weight_decay_norm=solver.WEIGHT_DECAY_NORM,
            bias_lr_factor=solver.BIAS_LR_FACTOR,
            weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
            lr_factor_func=(
                None if factor == 1 else lambda name: factor if "backbone" in name else 1
            ),
        )
        return maybe_add_gradient_clipping(self.cfg, torch.optim.SGD)(
            params,
            lr=solver.BASE_LR,
            momentum=solver.MOMENTUM,
            nesterov=solver.NESTEROV,
            weight_decay=solver.WEIGHT_DECAY,
        )

    def build_lr_scheduler(self, optimizer):
        return build_lr_scheduler(self.cfg, optimizer)

    def build_train_loader(self, make_sampler):
        cfg = self.cfg
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
        )
        check_image_files(dataset, "training set")
        sampler = None
        if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            sampler = make_sampler(dataset)
        elif cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
            sqrt = cfg.DATALOADER.get("REPEAT_SQRT", True)  # (a key of detectron2 > 0.6)
            sampler = make_sampler(
                dataset,
                RepeatFactorSampler,
                repeat_thresh=cfg.DATALOADER.REPEAT_THRESHOLD,
                sqrt=sqrt,
            )
        loader = build_detection_train_loader(
            cfg, mapper=RobustDatasetMapper(cfg, True), dataset=dataset, sampler=sampler
        )
        return loader, sampler

    def build_test_loader(self, dataset_name=None):
        return build_detection_test_loader(
            self.cfg, dataset_name, mapper=RobustDatasetMapper(self.cfg, False)
        )

    def test_set(self, dataset_name=None):
        name = dataset_name or self.test_dataset_names[0]
        dataset = get_detection_dataset_dicts([name], filter_empty=False)
        return dataset, RobustDatasetMapper(self.cfg, False)

    def val_loss_set(self):
        dataset = get_detection_dataset_dicts([self.test_dataset_names[0]], filter_empty=False)
        augmentations = self.test_augmentations().augs
        return dataset, RobustDatasetMapper(self.cfg, True, augmentations=augmentations)

    def build_evaluator(self, dataset_name=None, output_dir=None):
        name = dataset_name or self.test_dataset_names[0]
        if self.cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
            return SemSegEvaluator(name, output_dir=output_dir)
        if MetadataCatalog.get(name).get("evaluator_type") == "lvis":
            return LVISEvaluator(
                name, output_dir=output_dir, max_dets_per_image=self.cfg.TEST.DETECTIONS_PER_IMAGE
            )
        return COCOEvaluator(name, output_dir=output_dir)

    def set_weights(self, path):
        self.set_option("MODEL.WEIGHTS", path)

    def add_datasets_to_register(self, entries):
        new = {name: [name, j, r] for name, j, r in entries}
        kept = [list(e) for e in self.cfg.DATASETS.REGISTER_COCO if e[0] not in new]
        self.set_option("DATASETS.REGISTER_COCO", kept + list(new.values()))

    def use_datasets(self, train=None, test=None):
        if train:
            self.set_option("DATASETS.TRAIN", tuple(train))
        if test:
            self.set_option("DATASETS.TEST", tuple(test))

    def class_count_keys(self):
        keys = _CLASS_COUNT_KEYS.get(self.cfg.MODEL.META_ARCHITECTURE, [])
        return [(key, self._get(key), kind) for key, kind in keys]

    def _get(self, key):
        node = self.cfg
        for part in key.split("."):
            node = node[part]
        return node

    def set_option(self, key, value):
        frozen = self.cfg.is_frozen()
        self.cfg.defrost()
        *path, last = key.split(".")
        self._get(".".join(path))[last] = value
        if frozen:
            self.cfg.freeze()

    def save(self, path):
        with open(path, "w") as f:
            f.write(self.cfg.dump())
