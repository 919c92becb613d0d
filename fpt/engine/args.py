"""``train_net.py``'s command line: detectron2's ``default_argument_parser`` plus our flags."""

from detectron2.engine import default_argument_parser as d2_argument_parser

__all__ = ["default_argument_parser"]


def default_argument_parser(epilog=None):
    """detectron2's flags (``--config-file --num-gpus --num-machines --machine-rank --dist-url
    --resume --eval-only`` and trailing ``key=value`` overrides) plus:

    * ``--register-coco NAME JSON IMAGE_ROOT`` (repeatable): a COCO-format dataset;
    * ``--register-coco-train NAME JSON IMAGE_ROOT`` (repeatable) and ``--register-coco-test
      NAME JSON IMAGE_ROOT``: a COCO-format dataset, registered and trained (tested) on in place
      of the config's; the heads' class counts follow the training set
      (:func:`fpt.config.fit_num_classes`);
    * ``--dist-timeout SECONDS``: how long ranks wait for each other before failing (every
      process group);
    * ``--visualize N``: draw predictions on N test images at the end (default: the config's
      ``train.visualize``);
    * ``--unsafe-load``: fully unpickle checkpoints that hold objects outside the allow-list of
      :mod:`fpt.compat.checkpoint` (only for files you trust).
    """
    parser = d2_argument_parser(epilog)
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format instances json under NAME (repeatable)",
    )
    parser.add_argument(
        "--register-coco-train",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format json and train on it instead of the config's training set "
        "(repeatable: trains on all); the heads' class counts follow its categories",
    )
    parser.add_argument(
        "--register-coco-test",
        nargs=3,
        default=None,
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format json and evaluate on it instead of the config's test set",
    )
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="a rank that waits longer than this for the others fails, in every process group "
        "(default: 30 minutes)",
    )
    parser.add_argument(
        "--visualize",
        type=int,
        default=None,
        metavar="N",
        help="draw predictions on N test images into <output_dir>/visualizations",
    )
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="load checkpoints holding arbitrary Python objects (runs code from the file: only "
        "for files you trust); default: tensors, numpy arrays and plain containers only",
    )
    return parser
