"""Two Ray nodes on this machine and object storage on 127.0.0.1: what a real cluster asks of
the search, its export and a deployment, simulated (docs/CONTAINERS.md says how far).

The second node is a ``ray start --address`` of its own, in its own temp folder and working
folder, with a custom resource that the search's trials and training workers and the Serve
replica ask for, so all of them run there. The run's storage and the models are on an S3
server (moto's) started by the test. Every Python process of the second node carries an
audit hook (``sitecustomize``) that records each file it opens, and each folder it lists,
under the repository, other than code (``.venv/``, ``src/``, code files): the test asserts
there are none, and a second test shows that a read of a data file is recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from stocktrend import storage
from stocktrend.cluster.head import haproxy_env, ray_executable
from stocktrend.cluster.ports import HeadPorts, free_ports

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]
NODE = "second_node"  # the custom resource only the second node has

AUDIT_HOOK = '''
import os, sys
_log, _root = os.environ.get("STOCKTREND_AUDIT_LOG"), os.environ.get("STOCKTREND_AUDIT_ROOT")
if _log and _root:
    # The code: the environment, the package's source tree and its install metadata (on a
    # real cluster all of it comes with the image), and code files anywhere.
    _code_dirs = (os.path.join(_root, ".venv") + os.sep, os.path.join(_root, "src") + os.sep)
    _code = (".py", ".pyc", ".pth", ".so", ".typed")

    def _audit(event, args):
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        path = args[0]
        if path is None or isinstance(path, int):
            return
        try:
            path = os.path.abspath(os.fsdecode(path))
        except Exception:
            return
        if not (path == _root or path.startswith(_root + os.sep)) or path.startswith(_code_dirs):
            return
        if event == "open" and path.endswith(_code):
            return  # the code itself (on a real cluster it comes with the image)
        if event != "open" and (path in sys.path or not os.path.isdir(path)):
            # the import system looking through sys.path, or a library probing folders that
            # are not there (torch looks for CUDA libraries under every sys.path entry)
            return
        with open(_log, "a") as f:
            f.write(f"{os.getpid()} {event} {path} {' '.join(sys.argv[:2])[:120]}\\n")

    sys.addaudithook(_audit)
    with open(_log, "a") as f:
        f.write(f"{os.getpid()} armed\\n")
'''


class SecondNode:
    """A ``ray start --address`` worker node on loopback, in its own folders, started with
    ``--block`` in a process group of its own (stopping it stops its raylet and workers)."""

    def __init__(self, head, base: Path, repo_root: Path, num_cpus: int = 2):
        self.base, self.audit_log = base, base / "opened-under-repo.log"
        (base / "tmp").mkdir(parents=True, exist_ok=True)
        (base / "cwd").mkdir()
        (base / "hook").mkdir()
        (base / "hook" / "sitecustomize.py").write_text(AUDIT_HOOK)
        self.audit_log.write_text("")
        ports = HeadPorts.free()
        agent_http, agent_grpc, metrics, runtime_env = free_ports(4)
        self.haproxy_dir = Path(tempfile.mkdtemp(prefix="sthap", dir="/tmp"))
        env = {**head.env(), **haproxy_env(self.haproxy_dir), **{k: v for k, v in ports.env().items()},
               "TMPDIR": str(base / "tmp"), "STOCKTREND_AUDIT_LOG": str(self.audit_log),
               "STOCKTREND_AUDIT_ROOT": str(repo_root),
               "PYTHONPATH": os.pathsep.join([str(base / "hook"), os.environ.get("PYTHONPATH", "")])}
        cmd = [ray_executable(), "start", "--address", head.address, "--node-ip-address", "127.0.0.1",
               "--num-cpus", str(num_cpus), "--resources", json.dumps({NODE: 100}), "--temp-dir", str(base / "ray"),
               "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
               "--disable-usage-stats", "--block"]
        self.log = base / "node.log"
        self.proc = subprocess.Popen(cmd, env=env, cwd=base / "cwd", stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def node_id(self, timeout: float = 90) -> str:
        import ray

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in ray.nodes():
                if node["Alive"] and node["Resources"].get(NODE):
                    return node["NodeID"]
            if self.proc.poll() is not None:
                break
            time.sleep(1)
        raise RuntimeError(f"the second node did not join:\n{self.log.read_text()[-3000:]}")

    def opened(self) -> tuple[int, list[str]]:
        lines = self.audit_log.read_text().splitlines()
        return sum(line.endswith(" armed") for line in lines), [line for line in lines if not line.endswith(" armed")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        shutil.rmtree(self.haproxy_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(s3_server, repo_root, ray_head):
    """A head and a second node of their own, both started with the S3 server's variables
    in their environment (as a real cluster's nodes get credentials); the session's head is
    stopped first (one cluster at a time on a machine) and comes back for later modules."""
    from conftest import SESSION_TMP, RayHead

    ray_head.down()
    # Short folders: Ray's unix socket paths must stay under 108 bytes.
    head = RayHead(Path(tempfile.mkdtemp(prefix="mn", dir=SESSION_TMP)), num_cpus=1)
    head.up()
    node = SecondNode(head, Path(tempfile.mkdtemp(prefix="n2", dir=SESSION_TMP)), repo_root)
    try:
        node_id = node.node_id()
        yield head, node, node_id
    finally:
        node.stop()
        head.down()


def _actors_by_node(head, prefix: str) -> dict[str, str]:
    from ray.util.state import list_actors

    return {a.actor_id: a.node_id for a in list_actors(address=head.dashboard, limit=10_000, detail=True)
            if a.class_name.startswith(prefix)}


def test_search_export_and_deployment_run_on_the_second_node_from_object_storage(cluster, s3, repo_root, tmp_path):
    head, node, node_id = cluster
    armed_before, _ = node.opened()
    env = {**head.env(), "RAY_ADDRESS": head.address}
    # The smoke search as a user runs it against a cluster, storage and models on S3.
    out = subprocess.run(
        [sys.executable, str(repo_root / "ray_jobs" / "tune.py"), "--space", str(repo_root / "search_spaces" / "smoke.yaml"),
         "--num-samples", "1", "--max-concurrent", "1", "--storage-path", f"{s3}/runs", "--models", f"{s3}/models",
         "--model-name", "smoke", "--name", "two-nodes", "--resources", json.dumps({NODE: 1}), "--no-evaluate",
         "--cache-root", str(tmp_path / "driver-cache")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert f"model artifact published: {s3}/models/smoke/" in out.stdout
    # Trials and their training workers ran on the second node, and left everything on S3:
    # every training rank's restarts file names its node; every trial's Tune result names the
    # process it ran in, one the second node's audit hook saw start.
    import pyarrow.fs as pafs

    fs, root = storage.filesystem(f"{s3}/runs/two-nodes")
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if f.type == pafs.FileType.File]
    starts = [f for f in files if f.endswith("/starts/rank0.jsonl")]
    results = [f for f in files if f.endswith("/result.json") and "/train_runs/" not in f]
    assert len(starts) == 1 and len(results) == 1, files

    def lines(path: str) -> list[dict]:
        with fs.open_input_stream(path) as f:
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]

    assert {r["node_id"] for path in starts for r in lines(path) if r["event"] == "start"} == {node_id}
    second_node_pids = {int(line.split()[0]) for line in node.audit_log.read_text().splitlines() if line.endswith(" armed")}
    assert {r["pid"] for path in results for r in lines(path)} <= second_node_pids
    assert storage.exists(f"{s3}/runs/two-nodes/summary/trials.csv")
    assert storage.exists(f"{s3}/runs/two-nodes/train_runs")
    version = storage.read_text(f"{s3}/models/smoke/latest").strip()
    assert storage.exists(f"{s3}/models/smoke/{version}/manifest.json")

    # Served from S3 by a replica on the second node, answering HTTP on the head's proxy.
    from conftest import ServeDeployment
    from stocktrend.inference.artifact import local_model_dir
    from stocktrend.inference.predictor import Predictor

    app = ServeDeployment(head, [{"name": "remote", "route_prefix": "/", "args": {
        "model": f"{s3}/models/smoke", "resources": {NODE: 1}, "num_cpus": 0.25, "backend": "torch",
        "prediction_log": False, "num_replicas": 1}}])
    try:
        replicas = _actors_by_node(head, "ServeReplica:remote:Predictor")
        assert set(replicas.values()) == {node_id}
        offline = Predictor.from_artifact(local_model_dir(f"{s3}/models/smoke"), "torch")
        window = np.random.default_rng(0).standard_normal((3, offline.seq_len, offline.n_features)).astype("float32")
        r = httpx.post(app.url("/v1/predict"), json={"windows": window.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == version
        expected = offline.predict_windows(window).probs[:, 1]
        got = [p["p_up"] for p in body["predictions"]]
        assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-5
    finally:
        app.delete()
    armed, opened = node.opened()
    assert armed > armed_before, "the audit hook never ran on the second node: this test would prove nothing"
    assert not opened, "the second node opened files under the repository:\n" + "\n".join(opened[:20])


def test_a_universe_on_object_storage_is_built_on_both_nodes_and_trained_on_the_second(cluster, s3, repo_root,
                                                                                          tmp_path):
    """The streamed build's tasks read a universe that is only on object storage, spread over
    both nodes; its dataset is published there and equals the in-memory build of the same
    files on disk; a training run on the second node reads it from there."""
    import re

    from stocktrend.data.config import load_data_config
    from stocktrend.data.panel_build import build_panel_dataset
    from stocktrend.data.synthetic import MarketSpec, generate
    from stocktrend.data.synthetic_files import write_market

    head, node, node_id = cluster
    armed_before, _ = node.opened()
    market = tmp_path / "market"
    write_market(generate(MarketSpec(instruments=12, days=900, seed=11)), market, ("partitioned",))
    build_panel_dataset(load_data_config(market / "partitioned.yaml"), tmp_path / "disk")
    universe = f"{s3}/universe"
    storage.upload_dir(market / "partitioned", f"{universe}/partitioned")
    with storage.staged(universe) as stage:
        for name in ("index.csv", "rates.csv", "oil.csv"):
            shutil.copy(market / name, stage / name)
    text = (market / "partitioned.yaml").read_text()
    for name in ("partitioned", "index.csv", "rates.csv", "oil.csv"):
        text = text.replace(f"path: {name}\n", f"path: {universe}/{name}\n")
    # Streamed in chunks of 3 instruments: four reads, to spread over the nodes.
    text = text.replace("  ticker_column: ticker\n", "  ticker_column: ticker\n  build: streamed\n  chunk: 3\n")
    (tmp_path / "universe.yaml").write_text(text)
    shutil.rmtree(market)  # nothing of the universe is left on this machine's disk
    env = {**head.env(), "RAY_ADDRESS": head.address}

    out = subprocess.run([sys.executable, str(repo_root / "ray_jobs" / "build_dataset.py"), "--config",
                          str(tmp_path / "universe.yaml"), "--out", f"{s3}/datasets", "--ray", "--quiet"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    nodes = re.search(r"chunks read on (.*)", out.stderr)
    assert nodes and f"node {node_id}: " in nodes.group(1) and nodes.group(1).count("node ") == 2, out.stderr[-3000:]
    published = re.search(rf"-> ({re.escape(s3)}/datasets/\w+)", out.stdout).group(1)
    disk = json.loads((tmp_path / "disk" / "metadata.json").read_text())
    assert published.endswith(disk["fingerprint"])  # the same inputs and config: the same dataset
    copy = storage.fetch_dir(published, "datasets")
    for name in ("features.npy", "train_index.npy", "test_y.npy"):
        assert np.array_equal(np.load(copy / name), np.load(tmp_path / "disk" / name), equal_nan=True), name

    out = subprocess.run([sys.executable, str(repo_root / "ray_jobs" / "train.py"), "--preset", "tiny",
                          "--dataset", published, "--epochs", "1", "--epoch-windows", "256", "--num-workers", "1",
                          "--cpus-per-worker", "1", "--resources", json.dumps({NODE: 1}), "--storage-path",
                          f"{s3}/runs", "--models", f"{s3}/models", "--name", "universe"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert f"model artifact published: {s3}/models/universe/" in out.stdout
    import pyarrow.fs as pafs

    fs, root = storage.filesystem(f"{s3}/runs")
    starts = [f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
              if f.path.endswith("/starts/rank0.jsonl")]
    assert len(starts) == 1, starts
    with fs.open_input_stream(starts[0]) as f:
        events = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    assert {e["node_id"] for e in events if e["event"] == "start"} == {node_id}
    armed, opened = node.opened()
    assert armed > armed_before
    assert not opened, "the second node opened files under the repository:\n" + "\n".join(opened[:20])


def test_the_audit_hook_sees_a_read_of_the_repository(cluster, repo_root):
    """The check above can fail: a task placed on the second node that reads a data file
    of the repository is recorded."""
    head, node, node_id = cluster
    import ray

    ray.init(address=head.address, log_to_driver=False, ignore_reinit_error=True)
    target = repo_root / "datasets" / "msft_v2.yaml"

    @ray.remote(num_cpus=0, resources={NODE: 1})
    def read(path: str) -> int:
        with open(path) as f:
            return len(f.read())

    assert ray.get(read.remote(str(target)), timeout=120) > 0
    _, opened = node.opened()
    assert any(str(target) in line for line in opened)
    node.audit_log.write_text("")
