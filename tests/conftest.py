import numpy as np
import pytest
import torch

# one intra-op thread: the test problems are small, and on a busy 2-core machine a second
# thread spin-waits against other work (measured: 2-10x slower with two)
torch.set_num_threads(1)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        # xdist's --dist loadgroup would otherwise send the groups with the most tests first;
        # the order below (pytest_collection_modifyitems) puts the longest-running first instead
        config.option.loadscopereorder = False
    # set on every test below (pytest_collection_modifyitems); xdist registers it too, this
    # keeps a run without xdist (-p no:xdist) free of unknown-mark warnings
    config.addinivalue_line("markers", "xdist_group(name): the pytest-xdist group of the test")
    config.addinivalue_line(
        "markers", "ray_teardown: a Ray test that kills the session's pooled actors (a failure, "
                   "a start-up that cannot succeed, CPUs held on purpose); run after every other "
                   "test so that the others reuse warm actors")


_HEAVY_FILES = ("test_readme.py", "test_model.py", "test_model_training.py", "test_store.py",
                "test_solvers.py", "test_runtime_faults.py", "test_config.py", "test_cli.py")


def _heaviest_first(filename: str) -> int:
    return _HEAVY_FILES.index(filename) if filename in _HEAVY_FILES else len(_HEAVY_FILES)


def _uses_the_ray_cluster(item) -> bool:
    """Requests ``ray_cluster``, statically or (a ``backend`` parameter of "ray") through
    ``request.getfixturevalue``."""
    callspec = getattr(item, "callspec", None)
    return ("ray_cluster" in getattr(item, "fixturenames", ())
            or (callspec is not None and callspec.params.get("backend") == "ray"))


@pytest.hookimpl(tryfirst=True)      # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Order and group the tests so that Ray starts once.

    * Every test on the session's Ray cluster runs first, in one xdist group (``--dist
      loadgroup``: the group goes to one worker, so one cluster starts and its pooled actors are
      reused; with ``--dist loadfile`` each worker that met a Ray test started its own cluster and
      actors, ~15 s of start-up each on a busy 2-core machine). Starting the longest unit first
      keeps the two workers' loads even.
    * Within it, tests that kill the pooled actors go last (their order among themselves is
      kept): an actor start imports torch, and the other Ray tests reuse the actors of the
      previous run.
    * Every other test is grouped by its file, as ``--dist loadfile`` would (module fixtures are
      built once)."""
    ray = [i for i in items if _uses_the_ray_cluster(i)]
    # the rest: the files that take longest first (the two workers then end together);
    # measured with --durations=0 on 2 cores, 2026-12-03 — the order affects only the wall time
    rest = [i for i in items if not _uses_the_ray_cluster(i)]
    rest.sort(key=lambda i: _heaviest_first(i.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]))
    ray.sort(key=lambda i: i.get_closest_marker("ray_teardown") is not None)   # stable
    for item in ray:
        item.add_marker(pytest.mark.xdist_group("ray_cluster"))
    for item in rest:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items[:] = ray + rest


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

