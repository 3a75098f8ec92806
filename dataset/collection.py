"""A loaded dataset (records + class names + load reports), class-name lists and concatenation."""
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """Records of one or more image sets sharing one class list.

    Attributes
    ----------
    name : str, e.g. ``voc:2007/trainval``
    records : tuple of :class:`ssdkit.dataset.records.Record`
    class_names : tuple of str, ``class_names[i]`` is class id ``i``
    reports : tuple of :class:`ssdkit.dataset.validation.LoadReport`, one per loaded source
    """

    name: str
    records: tuple
    class_names: tuple
    reports: tuple = ()

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, index):
        return self.records[index]

    @property
    def num_classes(self):
        return len(self.class_names)

    def class_counts(self):
        """(num_classes,) int64, objects per class over all records."""
        counts = np.zeros(self.num_classes, np.int64)
        for rec in self.records:
            np.add.at(counts, rec.classes, 1)
        return counts


def read_class_names(path):
    """Class names from a text file: one per line, blank lines and ``#`` comments ignored.

    Returns
    -------
    tuple of str; raises ValueError naming the file for an empty list or a duplicate name.
    """
    with open(path) as f:
        names = [line.split("#", 1)[0].strip() for line in f]
    names = tuple(n for n in names if n)
    _check_names(names, path)
    return names


def _check_names(names, source):
    if not names:
        raise ValueError("%s: the class list is empty" % source)
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError("%s: class name %r appears twice" % (source, n))
        seen.add(n)


def resolve_class_names(class_names, default=None):
    """``class_names`` as a tuple: a path to a names file, a sequence of names, or None for ``default``."""
    if class_names is None:
        if default is None:
            raise ValueError("no class names given")
        return tuple(default)
    if isinstance(class_names, (str, os.PathLike)):
        return read_class_names(class_names)
    names = tuple(str(n) for n in class_names)
    _check_names(names, "class_names")
    return names


def concat_datasets(datasets, name=None):
    """Join datasets that share one class list (e.g. VOC2007 trainval + VOC2012 trainval).

    Parameters
    ----------
    datasets : sequence of DetectionDataset
    name : str, defaults to the names joined by ``+``

    Returns
    -------
    DetectionDataset with the records in order; raises ValueError, naming both lists and the first
    difference, when class lists differ (order matters: it defines the class ids).
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("concat_datasets needs at least one dataset")
    first = datasets[0]
    for other in datasets[1:]:
        if tuple(other.class_names) != tuple(first.class_names):
            diff = next((i for i, (a, b) in enumerate(zip(first.class_names, other.class_names)) if a != b),
                        min(len(first.class_names), len(other.class_names)))
            raise ValueError(
                "cannot concatenate %s and %s: their class lists differ (class ids must mean the same class). "
                "%s has %d classes %s; %s has %d classes %s; first difference at id %d. Load both with the "
                "same class_names." % (first.name, other.name, first.name, len(first.class_names),
                                       list(first.class_names), other.name, len(other.class_names),
                                       list(other.class_names), diff))
    records = tuple(r for d in datasets for r in d.records)
    reports = tuple(rep for d in datasets for rep in d.reports)
    return DetectionDataset(name=name or "+".join(d.name for d in datasets), records=records,
                            class_names=tuple(first.class_names), reports=reports)
