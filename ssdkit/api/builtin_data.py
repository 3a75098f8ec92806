"""The built-in synthetic dataset: what train and evaluate use when a run names no data.

``python train.py --network resnet50 --data-shape 512`` (no ``--dataset``, ``--data-root``, ``--train``,
``--val``, no config naming data) trains on the synthetic shapes of :mod:`ssdkit.dataset.synthetic`,
written as Pascal VOC under ``data/synthetic`` of the working directory the first time (a log line says
so) and read from there afterwards; ``evaluate.py`` then evaluates on its test split.
"""
import dataclasses
import logging
import os
from dataclasses import dataclass

from ssdkit.dataset.synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset

log = logging.getLogger("ssdkit.data")

BUILTIN_ROOT = os.path.join("data", "synthetic")
"""Folder of the built-in dataset, relative to the working directory."""
BUILTIN_TRAIN, BUILTIN_TEST = 2000, 500
"""Images of its ``trainval`` and ``test`` splits (those of ``tools/make_synthetic_dataset.py``)."""


@dataclass(frozen=True)
class BuiltinData:
    """Where the built-in dataset lives and how many images its splits get when first written."""

    root: str = BUILTIN_ROOT
    num_train: int = BUILTIN_TRAIN
    num_test: int = BUILTIN_TEST


def names_data(config):
    """Whether ``config.data`` names any data (a root folder or a training / validation source)."""
    return bool(config.data.root or config.data.train or config.data.val)


def with_builtin_data(config, builtin=None):
    """``config`` itself if it names data, else ``config`` reading the built-in synthetic dataset.

    Parameters
    ----------
    config : Config
    builtin : BuiltinData or None (defaults), the dataset's folder (written there when it holds no
        ``test`` image set yet) and the image counts of its splits on first use

    Returns
    -------
    Config with ``data.format = "voc"``, ``data.root = ROOT/VOCdevkit``, ``data.train = ("2007/trainval",)``,
    ``data.val = ("2007/test",)`` and, when it has none, ``model.class_names`` the six synthetic classes.
    """
    if names_data(config):
        return config
    builtin = builtin or BuiltinData()
    root, num_train, num_test = builtin.root, builtin.num_train, builtin.num_test
    devkit = os.path.join(root, "VOCdevkit")
    if os.path.exists(os.path.join(devkit, "VOC2007", "ImageSets", "Main", "test.txt")):
        log.info("no data named: using the built-in synthetic dataset in %s", root)
    else:
        log.info("no data named: writing the built-in synthetic dataset (%d training and %d test images) to %s "
                 "(first use; name data with --dataset / --data-root / --train / --val)", num_train, num_test, root)
        make_synthetic_dataset(root, num_train=num_train, num_test=num_test, seed=0,
                               workers=min(4, os.cpu_count() or 1))
    data = dataclasses.replace(config.data, format="voc", root=devkit, train=("2007/trainval",),
                               val=("2007/test",))
    model = config.model if config.model.class_names else dataclasses.replace(
        config.model, class_names=SYNTHETIC_CLASSES)
    return dataclasses.replace(config, data=data, model=model)


def smoke_test_caps(config, images):
    """``config`` cut down for a smoke test of the scripts' defaults: one epoch of batches of at most
    ``images`` images, one loading worker (with ``BuiltinData(num_train=images, num_test=images)``
    one iteration on the built-in dataset)."""
    data = dataclasses.replace(config.data, batch_size=min(config.data.batch_size, images), num_workers=1)
    solver = dataclasses.replace(config.solver, epochs=1, warmup_epochs=0.0, warmup_iters=0, lr_steps=())
    return dataclasses.replace(config, data=data, solver=solver)
