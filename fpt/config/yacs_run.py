"""The :class:`~fpt.config.run.RunConfig` of a yacs config (a detectron2 ``CfgNode``, with our
nodes from :func:`fpt.config.loading.add_training_config` and the models' ``add_*_config``):
detectron2's registry builders, as its ``DefaultTrainer`` and ``DefaultPredictor`` use them."""

import detectron2.data.transforms as T
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer

from ..data import RobustDatasetMapper, check_image_files
from .run import RunConfig

__all__ = ["YacsRunConfig"]


class YacsRunConfig(RunConfig):
    kind = "yacs"
    model_key = "cfg.MODEL"
    weights_key = "MODEL.WEIGHTS"

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

    datasets_to_register = ()  # yacs configs name registered datasets only
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
            compile=(
                dict(mode=cfg.SOLVER.COMPILE.MODE, dynamic=None, backend="inductor")
                if cfg.SOLVER.COMPILE.ENABLED
                else None
            ),
        )

    def scaled_to_world_size(self, world_size):
        cfg = DefaultTrainer.auto_scale_workers(self.cfg, world_size)
        return self if cfg is self.cfg else YacsRunConfig(cfg)

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
        return build_optimizer(self.cfg, model)

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
            sampler = make_sampler(len(dataset))
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

    def build_evaluator(self, dataset_name=None, output_dir=None):
        name = dataset_name or self.test_dataset_names[0]
        if self.cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
            return SemSegEvaluator(name, output_dir=output_dir)
        return COCOEvaluator(name, output_dir=output_dir)

    def set_weights(self, path):
        frozen = self.cfg.is_frozen()
        self.cfg.defrost()
        self.cfg.MODEL.WEIGHTS = path
        if frozen:
            self.cfg.freeze()

    def save(self, path):
        with open(path, "w") as f:
            f.write(self.cfg.dump())
