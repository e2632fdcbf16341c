"""Shared pytest fixtures.

Datasets: ``small_real_dataset`` is the real builder on the committed CSVs (2008-2017, short
windows), for every test about training on market data. ``tiny_dataset_dir`` is a synthetic
folder in the builder's layout whose label is learnable by construction (class 1 iff feature
0's window mean > 0): for the tests that need to see a model learn, or data of a chosen size.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stocktrend.cluster.head import HEAD_ENV, PrivateRayHead

# The environment of the project's heads (token authentication on, as on a user's head; the
# token is created by the head's start-up when missing; no usage stats: no internet here).
# Ray reads it when it is imported: set it before any test imports Ray. A Ray temp folder of
# the session's own (RAY_TMPDIR) holds the private head and every local Ray a standalone
# script starts, so nothing is left in /tmp/ray and a head the user left running is never
# found by a test. Short names: Ray's unix socket paths must stay under 108 bytes.
os.environ.update(HEAD_ENV)
os.environ.pop("RAY_ADDRESS", None)
SESSION_TMP = Path(tempfile.mkdtemp(prefix="st", dir=os.environ.get("RAY_TMPDIR") or "/tmp"))
os.environ["RAY_TMPDIR"] = str(SESSION_TMP)

# One intra-op thread: these models are tiny, and on a busy 2-core machine two OpenMP
# threads spin-wait for each other (measured 5x slower than one thread under load).

torch.set_num_threads(1)

TINY_SEQ_LEN = 20
TINY_FEATURES = 8
TINY_SPLITS = {"train": 200, "val": 64, "test": 64}
TINY_HORIZON = 5


def write_synthetic_dataset(root: Path, seed: int = 0, sizes: dict[str, int] = TINY_SPLITS) -> Path:
    """Random windows whose label is learnable: class 1 iff feature 0's window mean > 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    # Business days, one window ending per day; splits are chronological, purged as the
    # builder purges: no day of [window start, label end] in two splits.
    purge = TINY_SEQ_LEN + TINY_HORIZON - 1
    day = np.datetime64("2015-01-02")
    meta_splits = {}
    for split, n in sizes.items():
        x = rng.standard_normal((n, TINY_SEQ_LEN, TINY_FEATURES)).astype(np.float32)
        label = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)
        y = np.eye(2, dtype=np.float32)[label]  # one-hot (N, 2)
        dates = np.busday_offset(day, np.arange(n), roll="forward").astype("datetime64[D]")
        day = np.busday_offset(dates[-1], purge + 1)
        np.save(root / f"{split}_X.npy", x)
        np.save(root / f"{split}_y.npy", y)
        np.save(root / f"{split}_dates.npy", dates)
        meta_splits[split] = {
            "n": int(n),
            "start": str(dates[0]),
            "end": str(dates[-1]),
            "class_counts": np.bincount(label, minlength=2).tolist(),
        }
    metadata = {
        "ticker": "SYNTH",
        "seq_len": TINY_SEQ_LEN,
        "horizon": TINY_HORIZON,
        "n_classes": 2,
        "classes": ["down", "up"],
        "features": {"selected": [f"f{i}" for i in range(TINY_FEATURES)]},
        "boundaries": {"purge_rows": purge},
        "splits": meta_splits,
    }
    (root / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def write_dataset():
    """The writer itself, for tests that need a variant (other sizes, broken files)."""
    return write_synthetic_dataset


# -- the session's private head, and the state every module leaves it in -----------------
LEAK_WAIT_S = 60  # how long a module's teardown waits for what it started to let go


class RayHead(PrivateRayHead):
    """A private head that knows its baseline: the resources free once it started (plus
    whatever session-wide fixtures share on purpose, after ``rebaseline``). A module that
    leaves less free than that has leaked a trial, a worker group, a replica or an actor."""

    baseline: dict[str, float] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def up(self):
        fresh = not self.running
        super().up()
        if fresh or self.baseline is None:
            self.rebaseline()
        return self

    def rebaseline(self) -> None:
        import ray

        self.baseline = _counted(ray.available_resources())

    def share(self, fraction: float, units: int, step: float = 0.05) -> float:
        """CPUs for each of ``units`` replicas or workers so that together they take
        ``fraction`` of the baseline's CPUs, rounded down to ``step``: requests sized from
        what a module is guaranteed to find, not from guesses about leftovers."""
        cpus = (self.baseline or {}).get("CPU", float(self.num_cpus))
        return max(step, int(cpus * fraction / units / step) * step)

    def wait_for_baseline(self, timeout_s: float) -> str | None:
        """None once everything beyond the baseline is let go (within ``timeout_s``); else a
        description of who still holds what."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
        deadline = time.monotonic() + timeout_s
        while True:
            short = _shortfall(self.baseline, _counted(ray.available_resources()))
            jobs = _running_jobs()
            if not short and not jobs:
                return None
            if time.monotonic() > deadline:
                return _who_holds(short, jobs)
            time.sleep(1)


def _counted(resources: dict[str, float]) -> dict[str, float]:
    """The resources a module could leak: CPU, GPU, logical memory, custom ones (not the
    object store, whose use moves with the objects alive, nor the per-node markers)."""
    return {k: float(v) for k, v in resources.items() if not k.startswith("node:") and k != "object_store_memory"}


def _shortfall(baseline: dict[str, float] | None, now: dict[str, float]) -> dict[str, float]:
    return {k: v - now.get(k, 0.0) for k, v in (baseline or {}).items() if now.get(k, 0.0) < v - max(1e-6, 1e-9 * v)}


def _running_jobs() -> list[str]:
    from ray.util.state import list_jobs

    from stocktrend.cluster.resources import state_address

    return [f"job {j.submission_id} `{(j.entrypoint or '')[:80]}` ({j.status})"
            for j in list_jobs(address=state_address(), limit=1000, raise_on_missing_output=False)
            if str(j.type).endswith("SUBMISSION") and str(j.status).rsplit(".", 1)[-1] in ("PENDING", "RUNNING")]


def _who_holds(short: dict[str, float], jobs: list[str]) -> str:
    from ray.util.state import list_placement_groups

    from stocktrend.cluster.resources import holders, state_address

    lines = [f"{k}: {v:g} still held" for k, v in short.items()]
    lines += [f"held by {h}" for h in holders()]
    lines += [f"placement group {pg.name or pg.placement_group_id} ({pg.state}) of job {pg.creator_job_id}: "
              f"{[b.get('unit_resources') for b in pg.bundles or []]}"
              for pg in list_placement_groups(address=state_address(), detail=True, limit=1000,
                                              raise_on_missing_output=False)
              if pg.state != "REMOVED"]
    lines += [f"still running: {j}" for j in jobs]
    return "\n  ".join(lines)


SESSION_HEAD: list[RayHead] = []


@pytest.fixture(scope="session")
def ray_head():
    head = RayHead(SESSION_TMP / "h")
    SESSION_HEAD.append(head)
    yield head
    head.down()


@pytest.fixture(scope="module", autouse=True)
def head_left_as_found(request):
    """Every module leaves the session's head as it found it. After the module's own
    fixtures are torn down (this one is set up first, so it is torn down last), its trials,
    worker groups, replicas, actors and jobs have up to LEAK_WAIT_S to let go; otherwise the
    module fails here, naming who holds what, and the head is stopped so that the next
    module starts on a clean one instead of failing three modules later."""
    yield
    head = SESSION_HEAD[0] if SESSION_HEAD else None
    if head is None or not head.running:
        return
    problem = head.wait_for_baseline(LEAK_WAIT_S)
    if problem:
        head.down()
        pytest.fail(f"{request.node.name} left the test head holding more than its baseline after "
                    f"{LEAK_WAIT_S} s:\n  {problem}", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_TMP, ignore_errors=True)
    if SUITE_TIME_OUT:
        _write_suite_time(exitstatus)


@pytest.fixture
def ray_local(ray_head):
    """The session's Ray head, up and connected in this process (per test: a test using
    ``no_ray_cluster`` may have stopped it; up() is a no-op when it runs)."""
    import ray

    ray_head.up()
    yield ray


@pytest.fixture(scope="module")
def ray_module(ray_head):
    """The head for module-scoped fixtures (deployments, trained runs)."""
    import ray

    ray_head.up()
    yield ray


@pytest.fixture()
def no_ray_cluster(ray_head):
    """No cluster alive: for tests of scripts that start their own local Ray."""
    ray_head.down()
    yield


@pytest.fixture(scope="session")
def small_real_dataset(tmp_path_factory, repo_root) -> Path:
    """A small dataset built by the real builder from the committed CSVs (2008-2017)."""
    import datetime as dt

    from stocktrend.config_io import with_overrides
    from stocktrend.data.build import build_dataset
    from stocktrend.data.config import load_data_config

    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    cfg = with_overrides(cfg, {"start": dt.date(2008, 1, 2), "seq_len": 10, "n_features": 8})
    out = tmp_path_factory.mktemp("small_real") / "npy"
    build_dataset(cfg, out)
    return out


@pytest.fixture(scope="session")
def small_multitask_dataset(tmp_path_factory, repo_root) -> Path:
    """The small real dataset with the auxiliary volatility target (a multi-task model's)."""
    import datetime as dt

    from stocktrend.config_io import with_overrides
    from stocktrend.data.build import build_dataset
    from stocktrend.data.config import load_data_config

    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    cfg = with_overrides(cfg, {"start": dt.date(2008, 1, 2), "seq_len": 10, "n_features": 8,
                               "auxiliary": "volatility"})
    out = tmp_path_factory.mktemp("small_multitask") / "npy"
    build_dataset(cfg, out)
    return out


def load_job(name: str):
    """A ray_jobs/<name>.py entry point as a module (they are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "ray_jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"ray_jobs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- model artifacts and Serve deployments -----------------------------------------------
def train_small_artifact(dataset: Path, models_root: Path, name: str, version: str, seed: int, workdir: Path) -> Path:
    """A one-epoch tiny model on the small real dataset, exported as an artifact (no Ray).

    Its recipe selects on validation cross-entropy (the default is AUROC): a retrain compares
    a challenger with its champion on the champion's metric, and the retrain tests weaken a
    champion's calibration (``test_retrain._weaken``), which cross-entropy sees and AUROC,
    a ranking score, does not."""
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.export import export_artifact
    from stocktrend.training.fit_local import fit_local

    model_cfg = model_config_from_metadata("tiny", read_metadata(dataset))
    train_cfg = TrainConfig(batch_size=64, accumulate_grad_batches=1, max_epochs=1, seed=seed, selection_metric="val_ce")
    res = fit_local(dataset, model_cfg, train_cfg, workdir, max_epochs=1, progress=False,
                    accelerator="cpu", enable_model_summary=False)
    return export_artifact(res["best_checkpoint"], dataset, models_root, name, history=res["history"], version=version)


@pytest.fixture(scope="session")
def two_versions(small_real_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """models/small/{v1,v2} trained with different seeds; `latest` names v2."""
    root = tmp_path_factory.mktemp("serve_models")
    v1 = train_small_artifact(small_real_dataset, root / "models", "small", "v1", 1, root / "run1")
    v2 = train_small_artifact(small_real_dataset, root / "models", "small", "v2", 2, root / "run2")
    return v1, v2


class ServeDeployment:
    """Applications deployed from serve/config.yaml on the session's Ray head (HTTP on its
    private loopback port), through the same control code as ray_jobs/deploy.py."""

    def __init__(self, head: RayHead, apps: list[dict]):
        from stocktrend.serving import control

        self.head, self.control = head, control
        base = control.load_config(control.DEFAULT_CONFIG)
        template = base["applications"][0]
        config = {**base, "http_options": {"host": "127.0.0.1", "port": head.serve_port}, "applications": []}
        for app in apps:
            one = control.with_overrides({"applications": [template]}, None, app["args"], {},
                                         name=app["name"], route_prefix=app["route_prefix"])["applications"][0]
            if "runtime_env" in app:
                one["runtime_env"] = app["runtime_env"]
            config["applications"].append(one)
        self.config = config
        # 300 s: four applications' replicas start on a 2-core machine that may be running the
        # rest of the suite (and a user's head); 180 s was once not enough for one of them.
        control.deploy(head.dashboard, config, timeout=300)
        self.base_url = f"http://127.0.0.1:{head.serve_port}"

    def url(self, path: str, app: int = 0) -> str:
        prefix = self.config["applications"][app]["route_prefix"].rstrip("/")
        return f"{self.base_url}{prefix}{path}"

    def delete(self) -> None:
        """Every application removed; Serve itself (controller, HAProxy: no CPUs) stays up for
        the next module. (The REST DELETE would shut Serve down, and the next deployment
        would start it again.)"""
        empty = {k: v for k, v in self.config.items() if k != "applications"}
        self.control.client(self.head.dashboard).deploy_applications({**empty, "applications": []})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.control.client(self.head.dashboard).get_serve_details().get(
                "applications"):
            time.sleep(1)


@pytest.fixture(scope="module")
def serve_deploy(ray_module, ray_head):
    """A factory: deploy applications for this module; all are deleted at its end."""
    made: list[ServeDeployment] = []

    def deploy(apps: list[dict]) -> ServeDeployment:
        d = ServeDeployment(ray_head, apps)
        made.append(d)
        return d

    yield deploy
    if made:
        made[-1].delete()


# -- object storage -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's) on 127.0.0.1 for the session; the AWS_* variables
    that point pyarrow (and so Ray's storage layer, and every process started from here) at it
    are set while it runs."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "stocktrend-test", "AWS_SECRET_ACCESS_KEY": "stocktrend-test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3(s3_server) -> str:
    """A new, empty bucket: ``s3://<bucket>`` (fetched copies are keyed by location, so no
    two tests, or test runs, share one)."""
    import uuid

    import pyarrow.fs as pafs

    bucket = f"st-{uuid.uuid4().hex[:16]}"
    pafs.FileSystem.from_uri(f"s3://{bucket}?allow_bucket_creation=true")[0].create_dir(bucket)
    return f"s3://{bucket}"


# -- the suite's own time (make suite-time) ------------------------------------------------
# With STOCKTREND_SUITE_TIME_OUT set, every test's set-up, call and teardown time, the whole
# run's wall time, the machine, and whether a user's head ran beside the suite are written
# there (bench/results/suite_time.json; docs/BENCHMARKS.md quotes it).
SUITE_TIME_OUT = os.environ.get("STOCKTREND_SUITE_TIME_OUT")
_SUITE_T0 = time.time()
_TIMES: dict[str, dict] = {}


def pytest_runtest_logreport(report):
    if SUITE_TIME_OUT:
        entry = _TIMES.setdefault(report.nodeid, {"outcome": "passed"})
        entry[report.when] = round(report.duration, 2)
        if report.failed or (report.skipped and report.when == "setup"):
            entry["outcome"] = "skipped" if report.skipped else f"{report.when} failed"


def _write_suite_time(exitstatus) -> None:
    from bench.machine import machine_info
    from stocktrend.cluster.ports import HeadPorts, holder

    tests = [{"test": k, **v, "total": round(sum(v.get(p, 0.0) for p in ("setup", "call", "teardown")), 2)}
             for k, v in _TIMES.items()]
    modules: dict[str, float] = {}
    for t in tests:
        module = t["test"].split("::")[0]
        modules[module] = round(modules.get(module, 0.0) + t["total"], 1)
    user_head = holder(HeadPorts.gcs)
    out = {"machine": machine_info(), "wall_s": round(time.time() - _SUITE_T0, 1), "exitstatus": int(exitstatus),
           "tests_run": len(tests), "not_passed": [t["test"] for t in tests if t["outcome"] != "passed"],
           "beside_user_head": bool(user_head and "gcs_server" in user_head),
           "modules": dict(sorted(modules.items(), key=lambda kv: -kv[1])),
           "tests": sorted(tests, key=lambda t: -t["total"])}
    path = Path(SUITE_TIME_OUT)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
