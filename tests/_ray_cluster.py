"""A real multi-node Ray cluster on this machine for the tests (``ray.cluster_utils``), without
touching other processes: cluster_utils writes its address to /tmp/ray/ray_current_cluster, where
every other ``ray.init()`` / ``ray.init(address="auto")`` on the machine would find it; the file is
put back as it was at once."""
from __future__ import annotations

import os
from typing import Optional


def _address_file() -> str:
    import ray._private.utils as u
    return u.get_ray_address_file(None)


def two_node_cluster(cpus_per_node: int = 1, dashboard_port: Optional[int] = None):
    """A head and a second node (separate raylets), ``cpus_per_node`` logical CPUs each; with a
    ``dashboard_port`` the head serves the dashboard and the job API on loopback."""
    from ray.cluster_utils import Cluster
    path = _address_file()
    before = open(path).read() if os.path.exists(path) else None
    head = {"num_cpus": cpus_per_node, "include_dashboard": dashboard_port is not None}
    if dashboard_port is not None:
        head.update(dashboard_host="127.0.0.1", dashboard_port=dashboard_port)
    try:
        cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args=head)
    finally:
        restore_address_file(path, before)
    cluster.add_node(num_cpus=cpus_per_node)
    cluster.wait_for_nodes()
    return cluster


def restore_address_file(path: str, before: Optional[str]) -> None:
    try:
        if before is None:
            os.remove(path)
        else:
            with open(path, "w") as f:
                f.write(before)
    except OSError:
        pass
