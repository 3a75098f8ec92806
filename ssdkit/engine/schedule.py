"""Learning-rate schedules: linear warm-up, then multi-step decay or cosine annealing.

Built on MXNet's own schedulers so that they travel with the optimizer (also to parameter servers
under ``dist_sync``) and resume from the optimizer's update count.
"""
import mxnet as mx


def build_lr_scheduler(solver, iters_per_epoch):
    """Scheduler for a :class:`~ssdkit.config.schema.SolverConfig`.

    Parameters
    ----------
    solver : SolverConfig (lr, epochs, warmup_epochs or warmup_iters, schedule, lr_steps, lr_factor)
    iters_per_epoch : int, optimizer updates per epoch

    Returns
    -------
    mx.lr_scheduler.LRScheduler, indexed by update count (1-based, as MXNet counts).
    """
    if iters_per_epoch < 1:
        raise ValueError("iters_per_epoch must be >= 1, got %r" % iters_per_epoch)
    warmup = solver.warmup_iters or int(round(solver.warmup_epochs * iters_per_epoch))
    total = solver.epochs * iters_per_epoch
    if solver.schedule == "cosine":
        return mx.lr_scheduler.CosineScheduler(max_update=max(total, warmup + 1), base_lr=solver.lr,
                                               final_lr=0.0, warmup_steps=warmup,
                                               warmup_begin_lr=0.0 if warmup else solver.lr)
    steps = [int(round(e * iters_per_epoch)) for e in solver.lr_steps]
    steps = [s for s in steps if s > warmup]
    if not steps:
        # MultiFactorScheduler needs a step; one past the end never fires.
        steps = [total + 1]
    return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=solver.lr_factor, base_lr=solver.lr,
                                                warmup_steps=warmup,
                                                warmup_begin_lr=0.0 if warmup else solver.lr)
