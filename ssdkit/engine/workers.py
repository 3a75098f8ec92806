"""Which worker this process is, for every way ssdkit scales out (``dist_*`` kvstores, Horovod)."""


def is_distributed(kvstore):
    """True for a kvstore that spans processes: MXNet's ``dist_*`` stores and ``horovod``."""
    return kvstore is not None and ("dist" in kvstore.type or kvstore.type == "horovod")


def rank_and_workers(kvstore):
    """``(rank, num_workers)`` of this process: ``(0, 1)`` unless ``kvstore`` is distributed.

    Rank 0 writes checkpoints, meta files and the history; worker ``rank`` reads shard ``rank`` of
    ``num_workers`` of the training data.
    """
    if is_distributed(kvstore):
        return kvstore.rank, kvstore.num_workers
    return 0, 1
