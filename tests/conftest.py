"""Shared pytest fixtures."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    """A seeded numpy Generator; each test gets the same stream."""
    return np.random.default_rng(20261122)
