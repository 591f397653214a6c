import numpy as np
import pytest
import torch

# one intra-op thread: the test problems are small, and on a busy 2-core machine a second
# thread spin-waits against other work (measured: 2-10x slower with two)
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ray_teardown: a Ray test that kills the session's pooled actors (a failure, "
                   "a start-up that cannot succeed, CPUs held on purpose); run after every other "
                   "test so that the others reuse warm actors")


def pytest_collection_modifyitems(config, items):
    """Tests that kill the pooled Ray actors go last (their order among themselves is kept): an
    actor start imports torch, 15-30 s on a busy 2-core machine, and the other Ray tests reuse
    the actors of the previous run."""
    keep = [i for i in items if i.get_closest_marker("ray_teardown") is None]
    last = [i for i in items if i.get_closest_marker("ray_teardown") is not None]
    items[:] = keep + last


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on this machine, shared by every Ray test of the session: a
    head and a second node (separate raylets, one CPU each), joined by this test process as a
    driver joins a cluster (``address``). A two-rank run then places one actor on each node, so
    each Ray test exercises what only multi-node runs do (RANK != LOCAL_RANK, NODE_RANK, a store
    read by workers on different nodes). /tmp/ray/ray_current_cluster is left as it was, so other
    processes' ``ray.init()`` never join it (tests/_ray_cluster.py)."""
    ray = pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")
    from _ray_cluster import two_node_cluster

    from eagle_dist.distributed import release_ray_actors, shutdown_ray
    shutdown_ray()                  # a local Ray started by an earlier test is not this cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster = two_node_cluster()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    release_ray_actors()
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _one_local_ray_for_the_session():
    """Ray, when a test starts it, stays up for the whole session (each start costs seconds) and
    is shut down once at the end."""
    yield
    from eagle_dist.distributed import shutdown_ray
    shutdown_ray()

