"""Choosing the checkpoint a ``--resume`` run continues from, and what makes the continuation exact.

Exact resume
------------
A run killed at any point (mid-epoch, or inside the checkpoint writes) and continued with
``--resume`` ends every later epoch with parameters, BatchNorm statistics and optimizer states
bit-identical to the uninterrupted run's, on CPU with the same seed and the same number of devices.
The resumed run restarts the epoch after its checkpoint, from that checkpoint, with:

- parameters and auxiliary states read after all pending work finished (``mx.nd.waitall()``);
- the optimizer state (momentum buffers, update counts, which position the lr schedule);
- MXNet's random state reseeded at every epoch start from ``(seed, epoch)``
  (:func:`epoch_seed`), so Dropout and the sampling operators (RPNTarget, ProposalTarget) draw the
  same numbers whether or not the run was interrupted;
- the data iterator positioned at the epoch: an iterator with an integer ``epoch`` attribute (the
  epoch its last ``reset()`` started: :class:`~ssdkit.dataset.folder_iter.FolderDetIter`,
  :class:`~ssdkit.dataset.two_stage_iter.TwoStageIter`, whose order and augmentation are drawn from
  ``(seed, epoch, position)`` whatever the number of decoding threads) gets the value it had when
  the checkpoint was written (``data_epoch`` in the trainer state);
- with several devices, each device's own BatchNorm statistics (``prefix-NNNN.devices``; the
  ``.params`` hold their mean, which is what inference uses);
- the history rows up to the checkpoint, stored inside its trainer state.

"The uninterrupted run" is the same command: a resume that changes the solver (``--epochs`` with the
cosine schedule, whose shape depends on the total, or ``--lr``) follows the new schedule from the
restored update count, as intended, and so differs. The multistep schedule does not depend on the
total, so stopping after N epochs and resuming to more is exact with it.

What is not exact: :class:`~ssdkit.dataset.rec_iter.RecordDetIter` (MXNet's C++
``ImageDetRecordIter``) and ``mx.io.NDArrayIter(shuffle=True)`` have no epoch position: the resumed
run shuffles and augments from a fresh random state (a warning says so). A run resumed on another
number of devices continues (with a warning) but not exactly. A distributed (``dist_sync``) run
resumes from rank 0's checkpoint, every worker's BatchNorm statistics from rank 0's devices; its
exactness was not tested. GPU kernels were not tested either (no GPU on the development machines).

Which checkpoint
----------------
:func:`find_resume_checkpoint` tries the epoch ``prefix-last.json`` names, then older ones, newest
first, and takes the first that :func:`~ssdkit.engine.checkpoint.verify_checkpoint` accepts. When
``prefix-last.json`` itself is damaged, every saved epoch is a candidate.
"""
import logging

import numpy as np

from ssdkit.engine import checkpoint, module_state
from ssdkit.engine.history import History

log = logging.getLogger("ssdkit.train")


def epoch_seed(seed, epoch):
    """MXNet's seed for 0-based ``epoch`` of a run seeded with ``seed``: a 31-bit int."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1)[0] >> 1)


def find_resume_checkpoint(prefix):
    """The newest intact checkpoint of ``prefix``, with the reasons older or damaged ones were skipped.

    Returns
    -------
    (ckpt, skipped) : ckpt is the dict :func:`~ssdkit.engine.checkpoint.verify_checkpoint`
        returns, or None when ``prefix`` has no checkpoint at all; skipped is a list of
        ``(epoch or None, reason)`` for every candidate passed over (newest first).

    Raises
    ------
    CheckpointError
        when checkpoints exist but none is intact (the message lists why each was refused).
    """
    skipped = []
    try:
        named = checkpoint.read_latest_pointer(prefix)
    except checkpoint.CheckpointError as err:
        named = None
        skipped.append((None, str(err)))
    saved = checkpoint.saved_epochs(prefix)
    if named is not None:
        candidates = [named] + [e for e in saved if e < named]
    else:
        candidates = saved
    for epoch in candidates:
        try:
            return checkpoint.verify_checkpoint(prefix, epoch), skipped
        except checkpoint.CheckpointError as err:
            skipped.append((epoch, str(err)))
    if not skipped:
        return None, skipped
    raise checkpoint.CheckpointError(
        "--resume: no intact checkpoint with prefix %s: %s. Remove the damaged files to start from "
        "scratch, or run without --resume." % (prefix, "; ".join(reason for _, reason in skipped)))


def data_position(data_iter):
    """The iterator's epoch position (its ``epoch`` attribute) or None when it has none."""
    epoch = getattr(data_iter, "epoch", None)
    return int(epoch) if isinstance(epoch, (int, np.integer)) else None


def restore_data_position(data_iter, position):
    """Set the iterator's ``epoch`` to ``position`` so its next ``reset()`` starts the epoch after it.

    Returns
    -------
    bool, whether the iterator could be positioned (False: it has no ``epoch`` or nothing was saved).
    """
    if position is None or data_position(data_iter) is None:
        return False
    data_iter.epoch = int(position)
    return True


def resume_point(prefix, rank):
    """Where a ``--resume`` run continues: :func:`find_resume_checkpoint`, with log lines.

    Parameters
    ----------
    prefix : str, the run's checkpoint prefix
    rank : int, the worker's rank; rank 0 repoints ``prefix-last.json`` at the checkpoint taken
        when it had to fall back (so that other readers of it get an intact one too)

    Returns
    -------
    (epoch, ckpt) : the number of finished epochs (0: none) and the verified checkpoint or None.
    """
    ckpt, skipped = find_resume_checkpoint(prefix)
    for epoch, reason in skipped:
        log.warning("--resume: %s checkpoint skipped: %s", "the latest" if epoch is None
                    else "epoch %d" % epoch, reason)
    if ckpt is None:
        log.warning("--resume: no checkpoint at %s, starting from scratch", prefix)
        return 0, None
    epoch = ckpt["epoch"]
    if skipped:
        log.warning("--resume: falling back to epoch %d, the newest intact checkpoint", epoch)
        if rank == 0:
            checkpoint.mark_latest(prefix, epoch)
    log.info("resuming from %s epoch %d", prefix, epoch)
    return epoch, ckpt


def restore_history(prefix, begin_epoch, trainer_state):
    """The :class:`~ssdkit.engine.history.History` of the ``begin_epoch`` finished epochs: the rows
    saved in the checkpoint's trainer state, else (older checkpoints) the history file's."""
    if "history" in trainer_state:
        return History(prefix, trainer_state["history"])
    try:        # a checkpoint written before the rows were part of the trainer state
        return History.load(prefix, up_to_epoch=begin_epoch)
    except ValueError as err:
        log.warning("--resume: %s; the history starts empty", err)
        return History(prefix)


def position_data(train_iter, begin_epoch, trainer_state):
    """Put ``train_iter`` at epoch ``begin_epoch`` (0-based) as saved in ``trainer_state``
    (``data_epoch``); warn when it cannot be positioned and shuffles."""
    if begin_epoch == 0:
        return
    if restore_data_position(train_iter, trainer_state.get("data_epoch", begin_epoch)):
        return
    if getattr(train_iter, "shuffle", True) is not False:
        log.warning("--resume: %s has no epoch position (no integer `epoch` attribute); the resumed "
                    "run's data order and augmentation differ from an uninterrupted run's",
                    type(train_iter).__name__)


def restore_devices(mod, ckpt, prefix, num_devices):
    """Give each of the ``num_devices`` devices of ``mod`` its own auxiliary states back when the
    checkpoint ``ckpt`` (of ``prefix``) has them; warn when it was trained on another device count."""
    saved = ckpt.get("device_aux")
    devices = ckpt["trainer_state"].get("num_devices", num_devices)
    if devices != num_devices:
        log.warning("--resume: the checkpoint was trained on %d devices, this run has %d; the run "
                    "continues, but not exactly as the uninterrupted one would", devices, num_devices)
    elif saved is not None and not module_state.set_device_aux_states(mod, saved):
        log.warning("--resume: %s does not fit this graph's devices; every device starts from the "
                    "averaged statistics", checkpoint.checkpoint_paths(prefix, ckpt["epoch"])["devices"])
