"""Retrain, challenge, promote: the comparison block and its purge, the decision rule, the lock,
and the whole life on a real head: a champion trained on every source cut at 2015-06-30 (the
committed files' own rows), the later rows restored, a retrain through Ray Train whose
challenger beats a deliberately weakened champion, enters the deployment as shadow under HTTP
traffic, is scored on realised outcomes and promoted with no failed request; then a retrain on
unchanged data, refused with both scores logged."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stocktrend.retraining.compare import compare
from stocktrend.retraining.lock import ModelLocked, model_lock
from stocktrend.retraining.plan import RetrainError, plan_retrain
from stocktrend.retraining.state import parse_duration, pending

CUT = "2015-06-30"


def _small_config(repo_root, data_root, base="msft_v2.yaml", **overrides):
    """A committed dataset config (default: MSFT from 2008) with short windows, its sources under ``data_root``."""
    raw = yaml.safe_load((repo_root / "datasets" / base).read_text())
    raw.update({"name": f"{raw['name']}_small", "start": "2008-01-02", "seq_len": 10, "n_features": 8, **overrides})
    (data_root / "crude-datasets").mkdir(parents=True, exist_ok=True)
    path = data_root / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _copy_sources(repo_root, data_root, raw, cut: str | None):
    """Each source file's header and its rows dated up to ``cut`` (all rows: None), as written."""
    for spec in raw["sources"].values():
        src, dst = repo_root / "datasets" / spec["path"], data_root / spec["path"]
        lines = src.read_text().splitlines(keepends=True)
        if cut is not None:
            col = lines[0].rstrip("\r\n").split(",").index(spec["columns"]["date"])
            lines = lines[:1] + [ln for ln in lines[1:] if ln.split(",")[col] <= cut]
        dst.write_text("".join(lines))


def test_the_comparison_block_is_purged_from_both_models(repo_root, tmp_path):
    from stocktrend.config_io import with_overrides
    from stocktrend.data.build import build_dataset, prepare
    from stocktrend.data.config import load_data_config
    from stocktrend.data.splits import day_span

    path, raw = _small_config(repo_root, tmp_path)
    _copy_sources(repo_root, tmp_path, raw, None)
    cfg = load_data_config(path)
    p = prepare(cfg)
    days = p.labelled_rows
    purge = cfg.purge_rows
    plan = plan_retrain(days, 26, purge, 0.1 / 0.9, "2015-06-30")
    assert plan.block_end == days[-1].date() and plan.block_end.year == 2017  # the Treasury curve ends 2017-03
    assert days[-1] - pd.Timestamp(plan.block_start) <= pd.Timedelta(weeks=26)
    assert plan.block_days == int((days > days[-1] - pd.Timedelta(weeks=26)).sum())
    # A champion that validated up to the last day before the block's purge gap is the limit.
    limit = days[days.get_loc(pd.Timestamp(plan.block_start)) - purge - 1].date()
    plan_retrain(days, 26, purge, 0.1 / 0.9, limit)
    with pytest.raises(RetrainError, match="purge gap"):
        plan_retrain(days, 26, purge, 0.1 / 0.9, days[days.get_loc(pd.Timestamp(limit)) + 1].date())
    with pytest.raises(RetrainError, match="--compare-weeks"):
        plan_retrain(days, 2, purge, 0.1 / 0.9, "2015-06-30")

    # The challenger's dataset: its test split is the block, its train and val days never touch it.
    s = cfg.split
    chal = with_overrides(cfg, {"split": {"train": s.train, "val": s.val, "test": s.test, **plan.split()}})
    meta = build_dataset(chal, tmp_path / "ds")
    test_dates = np.load(tmp_path / "ds" / "test_dates.npy").astype("datetime64[D]")
    assert str(test_dates[0]) == str(plan.block_start) and str(test_dates[-1]) == str(plan.block_end)
    assert len(test_dates) == plan.block_days
    rows = {k: p.calendar.get_indexer(pd.DatetimeIndex(np.load(tmp_path / "ds" / f"{k}_dates.npy")))
            for k in ("train", "val", "test")}
    spans = {k: day_span(p.calendar, np.unique(v), cfg.seq_len, cfg.horizon) for k, v in rows.items()}
    assert not spans["test"] & (spans["train"] | spans["val"]) and not spans["train"] & spans["val"]
    assert meta["config"]["split"]["test_start"] == str(plan.block_start)  # stored as dates, not fractions

    # A champion built on the sources cut at CUT: its validation windows (the last days it was
    # selected on) share no day with the block's windows, on the full calendar.
    cut = tmp_path / "cut"
    cut_path, _ = _small_config(repo_root, cut)
    _copy_sources(repo_root, cut, raw, CUT)
    champ_meta = build_dataset(load_data_config(cut_path), tmp_path / "champ")
    seen = champ_meta["splits"]["val"]["end"]
    plan = plan_retrain(days, 26, purge, 0.1 / 0.9, seen)
    champ_val = p.calendar.get_indexer(pd.DatetimeIndex(np.load(tmp_path / "champ" / "val_dates.npy")))
    block = p.calendar.get_indexer(pd.DatetimeIndex(np.load(tmp_path / "ds" / "test_dates.npy")))
    assert (champ_val >= 0).all() and str(np.load(tmp_path / "ds" / "test_dates.npy")[0])[:10] == str(plan.block_start)
    assert not day_span(p.calendar, champ_val, cfg.seq_len, cfg.horizon) & day_span(p.calendar, block, cfg.seq_len,
                                                                                     cfg.horizon)


def test_the_decision_rule_is_the_paired_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    base = np.clip(0.5 + 0.05 * rng.standard_normal(300), 0.01, 0.99)
    days = [str(d) for d in pd.bdate_range("2016-01-01", periods=300).date]
    same = compare(y, base, base.copy(), days, "val_ce", 5, n_boot=200)
    assert same.improvement["point"] == 0 and same.improvement["low"] == same.improvement["high"] == 0
    assert same.decide("better", 0.01)[0] is False
    assert same.decide("not-worse", 0.01)[0] is True
    sharper = np.where(y == 1, 0.7, 0.3)  # knows the answer: far lower cross-entropy
    won, reason = compare(y, base, sharper, days, "val_ce", 5, n_boot=200).decide("better", 0.0)
    assert won and "better" in reason and "cross_entropy" in reason
    lost, _ = compare(y, sharper, base, days, "val_auroc", 5, n_boot=200).decide("not-worse", 0.01)
    assert not lost
    nudged = np.clip(base + np.where(y == 1, 1e-4, -1e-4), 0.01, 0.99)  # better on every day, by a hair
    hair = compare(y, base, nudged, days, "val_ce", 5, n_boot=200)
    assert 0 < hair.improvement["low"] < 0.001
    assert hair.decide("better", 0.01, min_gain=0.0)[0] and not hair.decide("better", 0.01, min_gain=0.001)[0]


def test_the_log_says_what_is_pending_and_durations_parse():
    h = [{"action": "retrain", "decision": "refused", "challenger": "r1"},
         {"action": "retrain", "decision": "challenger", "challenger": "r2", "observe_until": "2026-01-01T00:00:00+00:00"}]
    assert pending(h)["challenger"] == "r2"
    assert pending([*h, {"action": "observation", "challenger": "r2", "decision": "extended"}])["challenger"] == "r2"
    assert pending([*h, {"action": "observation", "challenger": "r2", "decision": "promoted"}]) is None
    assert pending(h[:1]) is None
    assert parse_duration("10d") == dt.timedelta(days=10) and parse_duration("30s") == dt.timedelta(seconds=30)
    with pytest.raises(ValueError, match="one of s, m, h, d"):
        parse_duration("10 weeks")


def test_the_live_check_waits_for_outcomes_and_drops_a_worse_or_unproven_challenger():
    from stocktrend.retraining.state import judge_observation

    def pair(a, point, low, high, n=40, metric="cross_entropy"):
        return {"a": a, "b": "c1" if a == "r1" else "r1", "n": n,
                f"{metric}_a_minus_b": {"point": point, "low": low, "high": high}}

    assert judge_observation(None, "r1", 20, False)[0] == "extended"
    assert judge_observation(pair("r1", -0.1, -0.2, 0.0, n=5), "r1", 20, False)[0] == "extended"
    decision, reason, _ = judge_observation(pair("r1", -0.1, -0.2, 0.0, n=5), "r1", 20, True)
    assert decision == "dropped" and "not proven live" in reason
    # Cross-entropy, lower is better: a challenger whose loss is higher on every resample is worse.
    decision, _, diff = judge_observation(pair("r1", 0.2, 0.1, 0.3), "r1", 20, False)
    assert decision == "dropped" and (diff["low"], diff["high"]) == (-0.3, -0.1)
    assert judge_observation(pair("r1", 0.02, -0.05, 0.1), "r1", 20, False)[0] == "promoted"
    # The report may pair them the other way round: the difference is turned to the challenger's side.
    assert judge_observation(pair("c1", 0.2, 0.1, 0.3), "r1", 20, False)[0] == "promoted"
    # AUROC, higher is better.
    auc = pair("r1", -0.2, -0.3, -0.1, metric="auroc")
    assert judge_observation(auc, "r1", 20, False, "auroc", True)[0] == "dropped"
    assert judge_observation(None, "r1", 0, False)[0] == "promoted"  # --min-outcomes 0: no live check


def test_a_second_retrain_of_the_same_model_refuses_to_start(tmp_path, capsys):
    from conftest import load_job

    folder = tmp_path / "msft"
    folder.mkdir()
    with model_lock(folder):
        with pytest.raises(ModelLocked, match="another retrain is running .*pid"):
            with model_lock(folder):
                pass
        assert load_job("retrain").main(["--model", str(folder), "--no-serve"]) == 3
        assert "another retrain is running" in capsys.readouterr().err
    with model_lock(folder):  # released when the holder leaves
        pass


# -- the whole life, on the session's head ----------------------------------------------------
def _weaken(version_dir):
    """Push the champion's output bias far towards 'up': confident and often wrong, so any
    sensible challenger beats it. The manifest is rewritten so the artifact stays valid."""
    from stocktrend.inference.artifact import MANIFEST, WEIGHTS, file_sha256

    state = torch.load(version_dir / WEIGHTS, weights_only=True)
    last = max((k for k in state if k.startswith("head.") and k.endswith(".bias")), key=lambda k: int(k.split(".")[1]))
    state[last] = state[last] + torch.tensor([-2.0, 2.0])
    torch.save(state, version_dir / WEIGHTS)
    manifest = json.loads((version_dir / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = file_sha256(version_dir / WEIGHTS)
    (version_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_retrain_challenges_shadows_and_promotes_under_traffic(repo_root, tmp_path, ray_head, serve_deploy, capsys,
                                                               request):
    from conftest import load_job, train_small_artifact
    from stocktrend.data.build import build_dataset, prepare
    from stocktrend.data.config import load_data_config
    from stocktrend.inference.bars import bars_until
    from stocktrend.inference.predictor import Predictor

    data, models = tmp_path / "data", tmp_path / "models"
    path, raw = _small_config(repo_root, data)
    _copy_sources(repo_root, data, raw, CUT)
    build_dataset(load_data_config(path), tmp_path / "ds_cut")
    champion = train_small_artifact(tmp_path / "ds_cut", models, "msft", "c1", 1, tmp_path / "run_c1")
    seen = json.loads((champion / "training.json").read_text())["dataset"]
    assert max(s["end"] for s in seen["sources"].values()) <= CUT
    _weaken(champion)
    _copy_sources(repo_root, data, raw, None)  # the real later rows come back

    cfg = load_data_config(path)
    plan = plan_retrain(prepare(cfg).labelled_rows, 26, cfg.purge_rows, 0.1 / 0.9, seen["splits"]["val"]["end"])
    predictor = Predictor.from_artifact(champion)
    block = pd.bdate_range(plan.block_start, plan.block_end)
    bodies = [{"bars": bars_until(predictor, data, str(d.date()))} for d in block[5:-5:3][:30]]

    folder = models / "msft"
    app = serve_deploy([{"name": "retrain", "route_prefix": "/", "args": {
        "model": str(folder), "backend": "torch", "num_cpus": ray_head.share(0.125, 1), "num_replicas": 1,
        "monitoring_flush_s": 0.1,
        "health_check_period_s": 1}}])
    request.addfinalizer(app.delete)  # the next tests get the head's CPUs back, whatever happens here
    seen_answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic(i: int):
        with httpx.Client(timeout=120) as c:
            n = i
            while not stop.is_set():
                r = c.post(app.url("/v1/predict/bars"), json=bodies[n % len(bodies)])
                seen_answers.append((r.status_code, r.json()["model_version"] if r.status_code == 200 else r.text))
                n += 2

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    retrain = load_job("retrain")
    common = ["--model", str(folder), "--data-root", str(data), "--epochs", "1", "--compare-weeks", "26",
              "--bootstrap", "200", "--dashboard", ray_head.dashboard, "--storage-path", str(tmp_path / "runs")]
    try:
        assert retrain.main([*common, "--version", "r1", "--observe", "10s", "--wait", "--min-outcomes", "10"]) == 0
        stop_at = len(seen_answers)
        deadline = 60
        while len(seen_answers) < stop_at + 10 and deadline:  # answers after the promotion
            threading.Event().wait(1)
            deadline -= 1
    finally:
        stop.set()
        for t in threads:
            t.join(120)

    failed = [a for a in seen_answers if a[0] != 200]
    assert len(seen_answers) > 30 and not failed, failed[:3]
    assert {v for _, v in seen_answers[:5]} == {"c1"} and {v for _, v in seen_answers[-5:]} == {"r1"}
    assert (folder / "latest").read_text().strip() == "r1"
    history = [json.loads(line) for line in (folder / "promotions.jsonl").read_text().splitlines()]
    steps = [h.get("decision") or h.get("action") if "to" not in h else f"to {h['to']}" for h in history]
    assert steps == ["challenger", "challenger", "to r1", "promoted"], steps  # route, retrain, move, observation
    won = history[1]
    assert won["champion"] == "c1" and won["challenger"] == "r1" and won["stage"] == "shadow"
    assert won["block"] == {"start": str(plan.block_start), "end": str(plan.block_end), "days": plan.block_days,
                            "windows": plan.block_days}
    assert won["improvement"]["low"] > 0 and won["scores"]["champion"]["cross_entropy"]["point"] > 1  # weakened
    assert won["challenger_window"]["val"][1] < str(plan.block_start)
    assert history[3]["realised"]["paired_outcomes"] >= 10
    r1 = json.loads((folder / "r1" / "training.json").read_text())
    assert r1["retrain"]["champion"] == "c1" and r1["retrain"]["plan"]["block_start"] == str(plan.block_start)
    splits = r1["dataset"]["splits"]  # the challenger's window, as dates, in its artifact
    assert splits["test"]["start"] == str(plan.block_start) and splits["val"]["end"] < str(plan.block_start)
    assert splits["val"]["start"] == str(plan.val_start) and splits["train"]["end"] < str(plan.val_start)
    assert json.loads((folder / "r1" / "preprocessing.json").read_text())["data_config"]["split"]["val_start"] \
        == str(plan.val_start)
    # r1's own report names the block that chose it, and scores out of sample only after it:
    # the sources end with the block, so there is nothing yet.
    from stocktrend.evaluation.report import evaluate_artifact
    from stocktrend.evaluation.selection import score_after

    report = evaluate_artifact(folder / "r1", out_dir=tmp_path / "r1_eval", n_boot=50, data_root=data)
    assert report["selection"]["chosen_on"]["start"] == str(plan.block_start)
    assert "none_yet" in report["selection"]["after"] and "not out of sample" in report["policy"]
    assert "No selection" not in (tmp_path / "r1_eval" / "report.md").read_text()
    # Had the block ended 60 labelled days earlier, the days after its purge gap are scored as served.
    cfg = load_data_config(path)
    days = prepare(cfg).labelled_rows
    early_end = str(days[-60].date())
    after = score_after(folder / "r1", cfg, data, None, early_end, cfg.purge_rows, 50, 0)
    assert after["start"] > early_end and after["days"] == 60 - 1 - cfg.purge_rows
    assert 0 <= after["metrics"]["accuracy"]["point"] <= 1 and after["windows"] == after["days"]

    # The same command again: no new rows since r1's block, on which r1 was selected: refused at once.
    assert retrain.main([*common, "--version", "r2"]) == 2
    assert "the block it was promoted on" in capsys.readouterr().err
    # Accepting that reuse: the same data trains the same model, no better; refused, both scores logged.
    assert retrain.main([*common, "--version", "r2", "--reuse-block"]) == 0
    history = [json.loads(line) for line in (folder / "promotions.jsonl").read_text().splitlines()]
    refused = history[-1]
    assert refused["decision"] == "refused" and refused["champion"] == "r1" and refused["challenger"] == "r2"
    assert refused["reused_block"] and abs(refused["improvement"]["point"]) < 1e-3 and "not better" in refused["reason"]
    for side in ("champion", "challenger"):
        scores = refused["scores"][side]
        assert 0 < scores["cross_entropy"]["point"] < 1 and scores["accuracy"]["point"] > 0
    assert (folder / "latest").read_text().strip() == "r1" and (folder / "r2" / "manifest.json").is_file()
    model = httpx.get(app.url("/v1/model"), timeout=30).json()
    assert model["model_version"] == "r1"
    # A challenger started by hand is not overwritten by a retrain.
    promote = load_job("promote")
    assert promote.main(["--model", str(folder), "--challenger", "r2", "--split", "0.1",
                         "--dashboard", ray_head.dashboard]) == 0
    capsys.readouterr()
    assert retrain.main([*common, "--version", "r3", "--reuse-block"]) == 2
    assert "already runs r2 beside r1" in capsys.readouterr().err and not (folder / "r3").exists()
    assert promote.main(["--model", str(folder), "--drop-challenger", "--dashboard", ray_head.dashboard]) == 0
    shutil.rmtree(folder / "predictions", ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_panel_model_is_judged_on_its_whole_cross_section(repo_root, tmp_path, ray_local):
    """The 20-stock panel, cut at the same date: the block holds every instrument's windows,
    resampled by whole dates; with no deployment a winner is promoted at once."""
    from conftest import load_job, train_small_artifact
    from stocktrend.data.build import build_dataset
    from stocktrend.data.config import load_data_config

    data, models = tmp_path / "data", tmp_path / "models"
    path, raw = _small_config(repo_root, data, "stocks20.yaml", start="2010-01-04", n_features=12)
    _copy_sources(repo_root, data, raw, CUT)
    build_dataset(load_data_config(path), tmp_path / "ds_cut")
    champion = train_small_artifact(tmp_path / "ds_cut", models, "stocks20", "p1", 3, tmp_path / "run_p1")
    _weaken(champion)
    _copy_sources(repo_root, data, raw, None)
    folder = models / "stocks20"
    assert load_job("retrain").main(["--model", str(folder), "--data-root", str(data), "--epochs", "1",
                                     "--bootstrap", "200", "--no-serve", "--version", "q1",
                                     "--storage-path", str(tmp_path / "runs")]) == 0
    history = [json.loads(line) for line in (folder / "promotions.jsonl").read_text().splitlines()]
    decided = history[-1]
    assert decided["action"] == "retrain" and decided["decision"] == "promoted", decided.get("reason")
    block = decided["block"]
    assert block["windows"] >= 15 * block["days"] >= 15 * 100  # the cross-section, every date of the block
    assert decided["improvement"]["low"] > 0 and "windows on" in decided["reason"]
    assert history[0]["to"] == "q1" and (folder / "latest").read_text().strip() == "q1"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_retrain_can_search_for_its_challenger(repo_root, tmp_path, ray_local):
    """--space: the challenger is the best trial (on validation) of a real Tune search whose
    dataset is the challenger's window; not-worse with a wide margin lets it through."""
    from conftest import load_job, train_small_artifact
    from stocktrend.data.build import build_dataset
    from stocktrend.data.config import load_data_config

    data, models = tmp_path / "data", tmp_path / "models"
    path, raw = _small_config(repo_root, data)
    _copy_sources(repo_root, data, raw, CUT)
    build_dataset(load_data_config(path), tmp_path / "ds_cut")
    train_small_artifact(tmp_path / "ds_cut", models, "msft", "c1", 1, tmp_path / "run_c1")
    _copy_sources(repo_root, data, raw, None)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "description": "two tiny trials", "preset": "tiny", "dataset": str(path), "num_samples": 2,
        "max_concurrent": 2, "seed": 0, "scheduler": {"max_epochs": 1, "grace_period": 1, "reduction_factor": 2},
        "train": {"batch_size": 64, "accumulate_grad_batches": 1}, "space": {"model.lstm_hidden": {"choice": [8, 16]}}}))
    folder = models / "msft"
    assert load_job("retrain").main(["--model", str(folder), "--data-root", str(data), "--space", str(space),
                                     "--require", "not-worse", "--margin", "1", "--bootstrap", "200", "--no-serve",
                                     "--cpus-per-worker", "0.5",
                                     "--version", "s1", "--storage-path", str(tmp_path / "runs")]) == 0
    decided = [json.loads(line) for line in (folder / "promotions.jsonl").read_text().splitlines()][-1]
    assert decided["decision"] == "promoted" and "not worse" in decided["reason"]
    training = json.loads((folder / "s1" / "training.json").read_text())
    assert training["tune"]["config"]["model.lstm_hidden"] in (8, 16) and training["retrain"]["space"] == str(space)
    assert training["dataset"]["splits"]["test"]["start"] == decided["block"]["start"]
    assert (folder / "latest").read_text().strip() == "s1"
    with pytest.raises(SystemExit):  # the search takes its epochs from the space
        load_job("retrain").parse_args(["--model", str(folder), "--space", str(space), "--epochs", "3"])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_alert_submits_the_retrain_job_once_per_interval(tmp_path, ray_head, serve_deploy, two_versions):
    """retrain_on_alert: a latency SLO no answer can meet fires; the monitor submits the real
    retrain job for the model (which here refuses at once: a 1000-week block cannot fit), once."""
    import time

    from ray.job_submission import JobStatus, JobSubmissionClient

    from stocktrend.cluster.auth import use_token_auth
    from stocktrend.inference.predictor import Predictor
    from stocktrend.serving.retrain_trigger import MARKER

    folder = tmp_path / "models" / "msft"
    shutil.copytree(two_versions[0].parent, folder, ignore=shutil.ignore_patterns("predictions", MARKER))
    app = serve_deploy([{"name": "alerting", "route_prefix": "/", "args": {
        "model": str(folder), "backend": "torch", "num_cpus": ray_head.share(0.125, 1), "monitoring_flush_s": 0.1,
        "alerts": {"p99_latency_ms": 0.001, "min_samples": 5},
        "retrain_on_alert": {"on": ["latency_slo"], "check_every_s": 0.5, "min_interval_hours": 1,
                             "args": ["--compare-weeks", "1000", "--no-serve"]}}}])
    shape = Predictor.from_artifact(folder)
    window = np.zeros((1, shape.seq_len, shape.n_features)).tolist()  # scaled features at their training mean
    with httpx.Client(timeout=60) as c:
        for _ in range(10):
            assert c.post(app.url("/v1/predict"), json={"windows": window}).status_code == 200
        marker, deadline = folder / MARKER, time.monotonic() + 60
        while time.monotonic() < deadline and not (marker.is_file() and json.loads(marker.read_text()).get("job")):
            time.sleep(0.5)
        entry = json.loads(marker.read_text())
        assert entry["alert"] == "latency_slo" and entry["job"], entry
        use_token_auth()
        jobs = JobSubmissionClient(ray_head.dashboard)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not jobs.get_job_status(entry["job"]).is_terminal():
            time.sleep(1)
        assert jobs.get_job_status(entry["job"]) == JobStatus.FAILED  # exit 2: it said why
        logs = jobs.get_job_logs(entry["job"])
        assert "ray_jobs/retrain.py" in jobs.get_job_info(entry["job"]).entrypoint
        assert "comparison block" in logs and "give fewer --compare-weeks" in logs, logs[-2000:]
        for _ in range(10):  # still alerting: no second job within the interval
            assert c.post(app.url("/v1/predict"), json={"windows": window}).status_code == 200
        time.sleep(3)
    mine = [j for j in jobs.list_jobs() if (j.metadata or {}).get("stocktrend") == "retrain-on-alert"
            and str(folder) in j.entrypoint]
    assert len(mine) == 1 and json.loads(marker.read_text())["job"] == entry["job"]
