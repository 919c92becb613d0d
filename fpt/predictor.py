"""One predictor for every config we ship, LazyConfig or yacs.

detectron2's ``DefaultPredictor`` only reads yacs configs (on a LazyConfig it fails with
"Missing key DATASETS"). :class:`Predictor` reads both (through :class:`fpt.config.RunConfig`):
it builds the model, loads its weights, and takes the test-time resize, the input channel order
and the class names from the config, exactly as the config's test loader would.
"""

import os
import pickle

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.checkpoint import DetectionCheckpointer

from .config import ConfigError, RunConfig
from .utils.compile import compile_model
from .utils.device import pick_device
from .utils.text import first_line

__all__ = ["Predictor", "pick_device", "config_metadata"]

# attributes that hold a model's score threshold at test time (ROI heads, RetinaNet, FCOS,
# PanopticFPN's instance/semantic combination)
_SCORE_THRESHOLD_ATTRIBUTES = ("test_score_thresh", "combine_instances_score_thresh")


class Predictor:
    """
    Run a detectron2 model built from a LazyConfig or a yacs config on images (numpy arrays).

    The config gives everything (LazyConfig / yacs):

    * model: ``instantiate(cfg.model)`` / ``build_model(cfg)``;
    * weights: ``cfg.train.init_checkpoint`` / ``MODEL.WEIGHTS``, loaded with
      ``DetectionCheckpointer``;
    * test-time resize: ``cfg.dataloader.test.mapper.augmentations`` (e.g. ``ResizeShortestEdge``,
      or ViTDet's ``ResizeShortestEdge(1024, 1024)``) / ``INPUT.MIN_SIZE_TEST``, ``MAX_SIZE_TEST``;
    * channel order: the model's ``input_format`` (else the test mapper's ``image_format``) /
      ``INPUT.FORMAT``;
    * class names: the metadata of ``cfg.dataloader.test.dataset.names`` / ``DATASETS.TEST[0]``.

    Example::

        predictor = Predictor(load_config("configs/Shapes/mask_rcnn_R_18_FPN_tiny.py",
                                          ["train.init_checkpoint=model_final.pth"]))
        outputs = predictor.predict([cv2.imread("a.jpg"), cv2.imread("b.jpg")])
    """

    tta_model = None  # the test-time augmentation wrapper of self.model, when used

    def __init__(
        self,
        cfg,
        device=None,
        batch_size=1,
        score_threshold=None,
        image_format="BGR",
        compile=None,
        random_weights=False,
        tta=None,
    ):
        """
        Args:
            cfg: a LazyConfig (``omegaconf.DictConfig``), a yacs ``CfgNode``, or either as a
                :class:`fpt.config.RunConfig` (kept as ``self.run``; ``self.cfg`` is the config).
            device (str or None): e.g. "cpu", "cuda:1". Default: the config's device when
                available, else cuda when available, else cpu.
            batch_size (int): images per forward pass in :meth:`predict`.
            score_threshold (float or None): if given, the model's test score thresholds are set
                to it and instances scoring below it are dropped.
            image_format (str): channel order of the images given to this predictor, "BGR"
                (as ``cv2.imread`` returns) or "RGB".
            compile (bool or None): ``torch.compile`` the model's backbone / transformer
                (:mod:`fpt.engine.compile`); None: as the config's ``train.compile``
                (``SOLVER.COMPILE``).
            random_weights (bool): keep the model's initial weights, loading no checkpoint
                (``weights`` is then None): for timing (``tools/benchmark.py``).
            tta (bool or None): predict with test-time augmentation, the views of the config's
                ``test.tta`` (``TEST.AUG``; :meth:`fpt.config.RunConfig.with_tta`); None: as its
                ``enabled`` says. ``self.model`` stays the model itself, ``self.tta_model`` is
                the augmenting wrapper (None without TTA).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.run = run = RunConfig.of(cfg)
        self.cfg = run.cfg
        self.batch_size = batch_size
        self.image_format = image_format
        self.score_threshold = score_threshold
        self.device = pick_device(device, run.device)
        try:
            self.model = run.build_model(self.device)
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError, AssertionError, AttributeError) as e:
            raise ConfigError(
                f"cannot build {run.model_key}: {type(e).__name__}: {first_line(e)}"
            ) from None
        self.augmentations = run.test_augmentations()
        self.metadata = run.metadata
        self.input_format = run.input_format(self.model)
        if self.input_format not in ("RGB", "BGR"):
            raise ConfigError(f"model input format must be RGB or BGR, got {self.input_format!r}")
        if score_threshold is not None:
            self._set_score_threshold(score_threshold)
        self.model.to(self.device).eval()
        self.weights = None if random_weights else self._load_weights(run.weights, run.weights_key)
        settings = run.compile_settings
        if compile or (compile is None and settings):
            compile_model(self.model, **(settings or {}))
        tta_model = run.with_tta(self.model, enabled=tta)
        self.tta_model = tta_model if tta_model is not self.model else None

    def _set_score_threshold(self, threshold):
        for module in self.model.modules():
            for name in _SCORE_THRESHOLD_ATTRIBUTES:
                if isinstance(getattr(module, name, None), float):
                    setattr(module, name, float(threshold))

    def _load_weights(self, weights, key):
        if not weights:
            raise ConfigError(f"no checkpoint given: set {key}=PATH (the trained model's .pth)")
        if "://" not in weights and not os.path.isfile(weights):
            raise ConfigError(f"checkpoint not found: {weights} (from {key})")
        checkpointer = DetectionCheckpointer(self.model)
        loaded = []  # what detectron2's loader reports: missing / unexpected keys
        load_model = checkpointer._load_model
        checkpointer._load_model = lambda checkpoint: loaded.append(load_model(checkpoint))
        try:
            checkpointer.load(weights)
        except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as e:
            raise ConfigError(f"cannot load checkpoint {weights}: {first_line(e)}") from None
        missing = loaded[0].missing_keys if loaded and loaded[0] is not None else []
        total = len(self.model.state_dict())
        if len(missing) > total // 2:  # predicting with mostly random weights: refuse
            raise ConfigError(
                f"checkpoint {weights} does not fit this model: {len(missing)} of the model's "
                f"{total} weights are not in it (e.g. {', '.join(missing[:2])}); was it trained with "
                "another config?"
            )
        return weights

    # ---- inference ----
    def preprocess(self, image):
        """
        Args:
            image (np.ndarray): ``(H, W, 3)`` uint8, in this predictor's ``image_format``.

        Returns:
            dict: the model input: ``image`` a ``(3, h, w)`` float32 tensor (resized, in the
            model's channel order), ``height``/``width`` the original size (outputs are scaled
            back to it).
        """
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"expected an (H, W, 3) image array, got {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image.dtype}")
        height, width = image.shape[:2]
        if self.image_format != self.input_format:
            image = image[:, :, ::-1]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": height, "width": width}

    def __call__(self, image):
        """Predict one image (see :meth:`predict`)."""
        return self.predict([image])[0]

    @torch.no_grad()
    def predict(self, images):
        """
        Args:
            images (list[np.ndarray]): ``(H, W, 3)`` uint8 images (sizes may differ), run
                ``batch_size`` at a time.

        Returns:
            list[dict]: one model output per image, on the CPU, in original image coordinates:
            ``instances`` (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks``...),
            ``sem_seg`` or ``panoptic_seg``, as the model produces.
        """
        outputs = []
        for start in range(0, len(images), self.batch_size):
            inputs = [self.preprocess(im) for im in images[start : start + self.batch_size]]
            model = self.model if self.tta_model is None else self.tta_model
            outputs += [self._postprocess(out) for out in model(inputs)]
        return outputs

    def _postprocess(self, output):
        output = {k: _to_cpu(v) for k, v in output.items()}
        if self.score_threshold is not None and "instances" in output:
            instances = output["instances"]
            output["instances"] = instances[instances.scores >= self.score_threshold]
        return output


def _to_cpu(value):
    if isinstance(value, tuple):  # panoptic_seg: (segments tensor, segments info)
        return tuple(_to_cpu(v) for v in value)
    return value.to("cpu") if hasattr(value, "to") else value


def config_metadata(cfg):
    """The metadata (class names, colors, category ids) of a config's test dataset:
    ``dataloader.test.dataset.names`` (LazyConfig) or ``DATASETS.TEST`` (yacs), first entry."""
    return RunConfig.of(cfg).metadata
