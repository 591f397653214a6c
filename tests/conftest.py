import os

import numpy as np
import pytest
import torch

# one intra-op thread: the test problems are small, and on a busy 2-core machine a second
# thread spin-waits against other work (measured: 2-10x slower with two)
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _one_local_ray_for_the_session():
    """Ray, when a test starts it, stays up for the whole session (each start costs seconds) and
    is shut down once at the end."""
    yield
    from eagle_dist.distributed import shutdown_ray
    shutdown_ray()
