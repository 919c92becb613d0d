"""Fitting a config's class counts to its training set (fine-tuning on your own data).

Every head a config trains has a class count of its own key (R-CNN box/mask heads and Cascade
stages: ``roi_heads.num_classes``, DETR's class head: ``num_classes`` + its no-object row,
RetinaNet, semantic heads: ``sem_seg_head.num_classes``; yacs: ``MODEL.*.NUM_CLASSES``).
:func:`fit_num_classes` sets each from the training set's categories, so that
``--register-coco-train`` needs no other option; a key given on the command line with another
count, or a test set whose classes differ, is refused in one line naming both.
"""

from detectron2.data import MetadataCatalog

from ..data import dataset_classes
from .errors import ConfigError
from .overrides import overridden_keys

__all__ = ["fit_num_classes"]


def _preview(names, limit=4):
    shown = ", ".join(map(str, names[:limit]))
    return shown + (", ..." if len(names) > limit else "")


def _classes(names, kind):
    """``(classes, dataset name)`` of the first of ``names`` whose ``kind`` classes ("thing":
    instances, "stuff": semantic) are known; every other one must have the same. None when none
    is known."""
    found = None
    for name in names:
        if kind == "thing":
            classes = dataset_classes(name)
        else:
            classes = MetadataCatalog.get(name).get("stuff_classes", None)
        if classes is None:
            continue
        classes = list(classes)
        if found is None:
            found = (classes, name)
        elif classes != found[0]:
            raise ConfigError(
                f"datasets {found[1]!r} and {name!r} have different classes "
                f"({len(found[0])}: {_preview(found[0])}; {len(classes)}: {_preview(classes)}): "
                "a model trains or tests on one list of classes"
            )
    return found


def fit_num_classes(run, opts=(), eval_only=False):
    """Set the class count of every head of ``run`` (a :class:`~fpt.config.RunConfig`, changed in
    place) from its training set's classes.

    Args:
        run: the config, datasets registered.
        opts: the command-line overrides: a class-count key set there to another number than the
            training set's is an error, not overwritten.
        eval_only (bool): fit to the test set (``--eval-only`` reads no training set).

    Returns:
        str or None: one line saying what was set (None: nothing changed).

    Raises:
        ConfigError: an override disagrees with the data, or the training and test sets (or two
            training sets) have different classes.
    """
    explicit = set(overridden_keys(run.cfg, opts))
    changes, source = [], None
    role = "test" if eval_only else "training"
    for kind in ("thing", "stuff"):
        train = _classes(run.test_dataset_names if eval_only else run.train_dataset_names, kind)
        if train is None:
            continue
        classes, name = train
        test = None if eval_only else _classes(run.test_dataset_names, kind)
        if test is not None and test[0] != classes:
            raise ConfigError(
                f"training set {name!r} has {len(classes)} classes ({_preview(classes)}), test "
                f"set {test[1]!r} has {len(test[0])} ({_preview(test[0])}): test on a set with the "
                "training set's classes (--register-coco-test NAME JSON IMAGES)"
            )
        for key, value, key_kind in run.class_count_keys():
            if key_kind != kind or value == len(classes):
                continue
            if key in explicit:
                raise ConfigError(
                    f"{key}={value}, but {role} set {name!r} has {len(classes)} classes "
                    f"({_preview(classes)}): set {key}={len(classes)} or leave it out"
                )
            run.set_option(key, len(classes))
            changes.append(f"{key} {value} -> {len(classes)}")
            source = f"{role} set {name!r}: {len(classes)} classes ({_preview(classes)})"
    return f"Class counts from {source}: {', '.join(changes)}" if changes else None
