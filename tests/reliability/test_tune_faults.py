"""Real searches on Ray: in-process with a worker killed, through `ray job submit` with an
interrupt and --resume, and the standalone command that starts its own local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from figures import record

from stocktrend.inference.predictor import Predictor
from stocktrend.tuning.run import SearchOptions, export_best, run_search
from stocktrend.tuning.space import load_space
from stocktrend.tuning.summary import write_summary
from stocktrend.tuning.trial import TRAIN_RUNS

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _histories(experiment: Path) -> dict[str, list]:
    return {p.parent.name: json.loads(p.read_text()) for p in (experiment / TRAIN_RUNS).glob("*/history.json")}


@pytest.mark.timeout(420)
def test_search_survives_a_killed_training_worker(ray_local, repo_root, tmp_path):
    space = load_space(repo_root / "search_spaces" / "smoke.yaml")
    # FIFO: every trial runs all its epochs (ASHA could stop one early, which is not under test here)
    opts = SearchOptions(num_samples=1, scheduler="fifo", kill_worker_at_epoch=1, max_failures=2)
    cache = tmp_path / "cache"
    results = run_search(space, opts, tmp_path / "runs", "killed", cache)
    assert results.num_errors == 0 and len(results) == 1
    experiment = tmp_path / "runs" / "killed"
    for trial_id, history in _histories(experiment).items():
        # the worker really died once at epoch 1, and the new worker resumed from the epoch-0
        # checkpoint (epoch 1, the optimizer steps of epoch 0 done), not from scratch
        run = experiment / TRAIN_RUNS / trial_id
        assert (run / "fault-injected").is_file()
        assert [h["epoch"] for h in history] == [0, 1, 2], trial_id
        starts = [json.loads(line) for line in (run / "starts" / "rank0.jsonl").read_text().splitlines()]
        first, again = [s for s in starts if s["event"] == "start"]
        assert (first["epoch"], first["global_step"], first["resumed_from"]) == (0, 0, None)
        assert again["epoch"] == 1 and again["global_step"] > 0 and again["resumed_from"].endswith("checkpoint.ckpt")
        assert starts[-1]["event"] == "end" and starts[-1]["epoch"] == 3
    table = write_summary(results, space, opts.metric, experiment / "summary")
    assert set(table["status"]) == {"TERMINATED"} and (experiment / "summary" / "trials.png").is_file()
    # trials sharing a data config share one cached dataset
    seq_lens = {r.config["data.seq_len"] for r in results}
    assert len([p for p in cache.iterdir() if p.is_dir()]) == len(seq_lens)
    assert opts.metric == "val_auroc"  # the recipe's
    artifact = export_best(results, space, opts.metric, experiment, cache, tmp_path / "models", "smoke")
    best = max(max(h["val_auroc"] for h in hist) for hist in _histories(experiment).values())
    p = Predictor.from_artifact(artifact)
    assert p.training["val_metrics"]["val_auroc"] == pytest.approx(best)
    record("train_worker_killed", trials=len(results), trial_errors=results.num_errors,
           workers_killed=len(results), epochs_completed=sum(len(h) for h in _histories(experiment).values()))


def _job(head, *args, timeout=120):
    cmd = [str(Path(sys.executable).parent / "ray"), "job", *args]
    return subprocess.run(cmd, env=head.env(), capture_output=True, text=True, timeout=timeout)


def _wait_job(head, job_id, states, timeout):
    """Until the job's status (from the job API, not a word in the CLI's output) is one of ``states``."""
    from ray.job_submission import JobSubmissionClient

    from stocktrend.cluster.auth import auth_headers

    client = JobSubmissionClient(head.dashboard, headers=auth_headers())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id).value
        if status in states:
            return status
        time.sleep(2)
    logs = client.get_job_logs(job_id)[-3000:]
    raise AssertionError(f"job {job_id} is {status}, not in {states}, after {timeout}s:\n{logs}")


def _finished_in_experiment_state(experiment: Path) -> set[str]:
    """Trials Tune's own experiment state records as finished (what --resume reads)."""
    from ray.tune import ExperimentAnalysis

    try:
        return {t.trial_id for t in ExperimentAnalysis(str(experiment)).trials if t.status == "TERMINATED"}
    except Exception:  # not written yet, or being rewritten
        return set()


@pytest.mark.timeout(600)
def test_job_submit_interrupt_and_resume(ray_local, ray_head, repo_root, tmp_path):
    tune_py = repo_root / "ray_jobs" / "tune.py"
    common = ["--space", str(repo_root / "search_spaces" / "smoke.yaml"), "--num-samples", "2", "--max-concurrent", "1",
              "--storage-path", str(tmp_path / "runs"), "--cache-root", str(tmp_path / "cache"),
              "--models", str(tmp_path / "models"), "--name", "interrupted", "--no-evaluate"]
    sub = _job(ray_head, "submit", "--address", ray_head.dashboard, "--no-wait", "--submission-id", "tune-first",
               "--", "python", str(tune_py), *common)
    assert sub.returncode == 0, sub.stderr
    experiment = tmp_path / "runs" / "interrupted"
    deadline = time.monotonic() + 300
    while not any(len(h) == 3 for h in _histories(experiment).values()):  # one trial finished
        assert time.monotonic() < deadline, _job(ray_head, "logs", "--address", ray_head.dashboard, "tune-first").stdout
        time.sleep(2)
    done = {k for k, h in _histories(experiment).items() if len(h) == 3}
    while not done <= _finished_in_experiment_state(experiment):  # Tune has recorded it as finished
        assert time.monotonic() < deadline, "Tune never recorded the finished trial"
        time.sleep(1)
    finished = {k: (experiment / TRAIN_RUNS / k / "history.json").stat().st_mtime for k in done}
    assert _job(ray_head, "stop", "--address", ray_head.dashboard, "tune-first").returncode == 0
    assert _wait_job(ray_head, "tune-first", ["STOPPED", "FAILED"], 120) == "STOPPED"

    sub = _job(ray_head, "submit", "--address", ray_head.dashboard, "--no-wait", "--submission-id", "tune-resume",
               "--", "python", str(tune_py), *common, "--resume")
    assert sub.returncode == 0, sub.stderr
    assert _wait_job(ray_head, "tune-resume", ["SUCCEEDED", "FAILED", "STOPPED"], 420) == "SUCCEEDED"
    for trial_id, mtime in finished.items():  # finished trials were not trained again
        assert (experiment / TRAIN_RUNS / trial_id / "history.json").stat().st_mtime == mtime
    table = (experiment / "summary" / "trials.csv").read_text()
    assert table.count("TERMINATED") == 2
    # both jobs are visible to the dashboard's job API
    listed = _job(ray_head, "list", "--address", ray_head.dashboard)
    listed = listed.stdout + listed.stderr
    assert "tune-first" in listed and "tune-resume" in listed
    record("search_interrupted_and_resumed", trials=2, finished_before_stop=len(finished), retrained_after_resume=0)


@pytest.mark.timeout(420)
def test_standalone_command_starts_its_own_ray_and_reports(no_ray_cluster, repo_root, tmp_path):
    out = subprocess.run(
        [sys.executable, str(repo_root / "ray_jobs" / "tune.py"), "--space", str(repo_root / "search_spaces" / "smoke.yaml"),
         "--num-samples", "1", "--storage-path", str(tmp_path / "runs"), "--cache-root", str(tmp_path / "cache"),
         "--models", str(tmp_path / "models"), "--name", "standalone", "--mlflow"],
        # RAY_ADDRESS=local: never join a head the user left running on this machine.
        capture_output=True, text=True, timeout=400, env={**os.environ, "RAY_ADDRESS": "local"},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "model artifact:" in out.stdout and "1 trials (0 failed)" in out.stdout
    versions = [p for p in (tmp_path / "models" / "msft_smoke").iterdir() if p.is_dir()]
    assert len(versions) == 1 and (versions[0] / "evaluation" / "report.json").is_file()

    # --mlflow: the trial is a run of the experiment, with its configuration, every epoch's
    # metrics, and (the best trial) where its artifact went; read back with MLflow's client.
    from mlflow.tracking import MlflowClient

    from stocktrend.tuning.tracking import ARTIFACT_TAG

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("standalone").experiment_id])
    assert {"data.seq_len", "model.lstm_hidden", "train.lr"} <= set(run.data.params)
    epochs = client.get_metric_history(run.info.run_id, "val_ce")
    assert len(epochs) >= 1 and all(0 < m.value < 5 for m in epochs)
    assert run.data.tags[ARTIFACT_TAG] == str(versions[0]) and "MLflow: experiment 'standalone'" in out.stdout
