"""ssdkit.engine: the training loop, checkpoints, learning-rate schedules and run history."""
