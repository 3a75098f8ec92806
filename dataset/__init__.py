"""ssdkit.dataset: dataset readers, the record format, iterators, augmentation and synthetic data."""
