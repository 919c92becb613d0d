"""detectron2's ``common/train.py`` plus the training features of ``fpt.engine``.

See ``fpt.config.TRAIN_DEFAULTS`` for the added fields (seed, iter_size, AMP, gradient
clipping, EMA, reference world size, best checkpoint, plot, visualize, cudnn benchmark).
Upstream configs that import detectron2's ``train`` get the same defaults when ``fpt`` loads
them.
"""

from detectron2.model_zoo import get_config

from fpt.config import fill_train_defaults

train = get_config("common/train.py").train
fill_train_defaults(train)
