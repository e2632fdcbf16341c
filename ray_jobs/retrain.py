"""Retrain a model on the rows its sources now hold; the challenger replaces the champion only
if it wins on days neither has seen, then only after a period in the deployment.

    python ray_jobs/retrain.py --model models/<name> [--compare-weeks 26] [--require better|not-worse]
                               [--stage shadow|split] [--observe 10d] [--min-outcomes 20] [--wait]
    ray job submit -- python ray_jobs/retrain.py --model models/<name>

Each run does the next step of the model's life, read from models/<name>/promotions.jsonl
(so the same command on a schedule is idempotent):

1. Nothing pending: rebuild the dataset from the serving champion's own dataset config with
   the rows its source files hold now. The last --compare-weeks of labelled days are the
   comparison block; it must start a purge gap after every day the champion trained or was
   selected on (its validation split, and the block it was itself promoted on). The
   challenger trains and validates on explicit dates before it (behind a purge gap, stored in
   its artifact) with the champion's model and training configuration through Ray Train, or
   as the best trial of a --space search. Both versions score the block as they serve (their
   own features and scalers); the challenger wins when the paired date-block bootstrap
   interval of its improvement on the training selection metric lies above --min-gain
   (--require better) or above -margin (not-worse). A loser is kept on disk, refused, and
   logged with both scores. A winner enters every deployment serving the model as shadow (or
   a --split share); with no deployment it is promoted at once.
2. A challenger pending, --observe not over: says so and exits 0 (--wait: sleeps until it is).
3. Observation over: scores the realised outcomes both versions logged on the same days (as
   ray_jobs/score_outcomes.py does). With --min-outcomes of them the challenger is promoted,
   unless it was significantly worse live (then dropped); with fewer the observation goes on,
   until --max-observe, when a challenger never proven live is dropped.

Exit status: 0 the step is done (refused, waiting and dropped included); 2 the retrain cannot
run as asked (the message says why; nothing changed); 3 another retrain of this model holds its
lock; 1 a move of a deployment failed (nothing recorded as done that did not take effect).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("retrain")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name>: the folder holding versions, 'latest' and the log")
    ap.add_argument("--data-root", default=str(ROOT / "datasets"),
                    help="where the dataset config's relative source paths resolve (default: datasets/)")
    ap.add_argument("--cache-root", default=str(ROOT / "datasets" / "cache"),
                    help="dataset cache (on a cluster: shared storage every node sees)")
    ap.add_argument("--compare-weeks", type=float, default=26, help="length of the comparison block (weeks)")
    ap.add_argument("--require", choices=["better", "not-worse"], default="better",
                    help="better: the improvement's interval lies above --min-gain; not-worse: above -margin")
    ap.add_argument("--min-gain", type=float, default=0.001,
                    help="the smallest improvement that counts as better, in the selection metric's units")
    ap.add_argument("--margin", type=float, default=0.01,
                    help="not-worse margin, in the selection metric's units (nats of cross-entropy, AUROC)")
    ap.add_argument("--reuse-block", action="store_true",
                    help="allow a block overlapping the one the champion was promoted on (its score there is "
                         "optimistic: it was selected on those days); logged")
    ap.add_argument("--epochs", type=int, help="max epochs (default: the champion's training configuration)")
    ap.add_argument("--space", help="search for the challenger with this search space (Ray Tune + Optuna + ASHA) on "
                                    "the challenger's window, instead of retraining the champion's configuration")
    ap.add_argument("--num-samples", type=int, help="trials of the --space search (default: the space file's)")
    ap.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs of each training worker")
    ap.add_argument("--storage-path", default=str(ROOT / "runs" / "retrain"), help="Ray Train / Tune storage")
    ap.add_argument("--version", help="the challenger's version name (default: r<UTC time>)")
    ap.add_argument("--stage", choices=["shadow", "split"], default="shadow",
                    help="how a winning challenger enters the deployment: scores every request, or answers a share")
    ap.add_argument("--split-share", type=float, default=0.1, help="the share it answers with --stage split")
    ap.add_argument("--observe", default="10d", help="how long it stays there before the decision (30s, 6h, 10d)")
    ap.add_argument("--min-outcomes", type=int, default=20,
                    help="realised outcomes both versions must have on the same days before promotion (0: no live "
                         "check, the comparison block decides alone)")
    ap.add_argument("--max-observe", default="30d", help="the longest observation; then too few outcomes drop it")
    ap.add_argument("--wait", action="store_true", help="stay until the observation ends, then finish it")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--dashboard", help="Ray dashboard URL (default: $RAY_DASHBOARD_ADDRESS, else the local head)")
    ap.add_argument("--no-serve", action="store_true", help="touch no deployment: a winner is promoted on disk")
    ap.add_argument("-v", "--verbose", action="store_true")
    from stocktrend.cluster.resources import add_wait_flag

    add_wait_flag(ap)
    args = ap.parse_args(argv)
    from stocktrend.retraining.state import parse_duration

    try:
        args.observe_for, args.max_observe_for = parse_duration(args.observe), parse_duration(args.max_observe)
    except ValueError as err:
        ap.error(str(err))
    if args.max_observe_for < args.observe_for:
        ap.error("--max-observe must be at least --observe")
    if args.space and args.epochs:
        ap.error("--epochs retrains the champion's configuration; a --space search takes its epochs from the space")
    if not 0 < args.split_share <= 1:
        ap.error("--split-share is a share of requests, above 0 and at most 1")
    return args


def _promote_module():
    """ray_jobs/promote.py, the one place routes and 'latest' move (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("stocktrend_promote_job", Path(__file__).with_name("promote.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _same_question(a: dict, b: dict) -> bool:
    keys = ("label", "horizon", "n_classes", "label_rule")
    index = (a["data_config"].get("index"), b["data_config"].get("index"))
    return all(a.get(k) == b.get(k) for k in keys) and index[0] == index[1]


class Job:
    def __init__(self, args: argparse.Namespace, model_dir: Path):
        from stocktrend.retraining.plan import RetrainError
        from stocktrend.serving import control

        self.args, self.model_dir, self.promote = args, model_dir, _promote_module()
        self.dashboard = None
        if not args.no_serve:
            try:
                self.dashboard, _ = control.find_dashboard(args.dashboard)
            except control.ServeControlError as err:
                raise RetrainError(str(err)) from None

    # -- the promotion log and the deployment, through promote.py --------------------
    def record(self, entry: dict) -> None:
        """Append to the promotion log under the model's routes lock (promote.py writes it too)."""
        from stocktrend.data.store import atomic_write_text
        from stocktrend.retraining.lock import routes_lock

        with routes_lock(self.model_dir):
            history = [*self.promote.read_history(self.model_dir),
                       {"time": _now().isoformat(timespec="seconds"), **entry}]
            atomic_write_text(self.model_dir / self.promote.HISTORY, "".join(json.dumps(h) + "\n" for h in history))

    def move(self, *flags: str) -> bool:
        where = ["--dashboard", self.dashboard] if self.dashboard else ["--no-serve"]
        return self.promote.main(["--model", str(self.model_dir), *flags, *where]) == 0

    def serving(self):
        """(the model's route in the first application serving it, those applications);
        (None, []) when nothing serves it. A head that cannot be read stops the job: acting on
        "no deployment" then would promote without the observation, or abandon one."""
        from stocktrend.retraining.plan import RetrainError
        from stocktrend.serving import control

        if self.dashboard is None:
            return None, []
        try:
            config = control.deployed_config(self.dashboard)
        except control.NothingDeployed:
            return None, []
        except Exception as err:  # unreachable, 401, 5xx: we cannot tell what serves the model
            raise RetrainError(f"cannot read the deployments on {self.dashboard} ({err}); nothing changed: run "
                               "again when the head answers, or give --no-serve") from None
        apps = control.apps_serving(config, self.model_dir)
        if not apps:
            return None, []
        return control.current_routing(control.app_config(config, apps[0])).models.get(self.model_dir.name), apps

    def run(self) -> int:
        from stocktrend.retraining.state import pending

        pend = pending(self.promote.read_history(self.model_dir))
        return self.observe(pend) if pend else self.retrain()

    # -- 1. retrain and compare ----------------------------------------------------------
    def retrain(self) -> int:
        import dataclasses

        from stocktrend.cluster.connect import connect
        from stocktrend.config_io import with_overrides
        from stocktrend.data.store import atomic_write_text, read_metadata
        from stocktrend.evaluation.outcomes import realised
        from stocktrend.evaluation.report import artifact_data_config
        from stocktrend.inference.artifact import load_parts, resolve_version_dir
        from stocktrend.inference.predictor import Predictor
        from stocktrend.retraining.challenger import retrain_champion_config, search_challenger
        from stocktrend.retraining.compare import block_keys, block_probabilities, compare
        from stocktrend.retraining.plan import RetrainError, labelled_days, plan_retrain
        from stocktrend.training.config import recorded_config

        args = self.args
        route, apps = self.serving()
        if route is not None and route.challenger is not None:
            raise RetrainError(f"application {apps[0]!r} already runs {route.challenger} beside {route.champion} and "
                               "no retrain of this job started it: finish that comparison first (promote.py "
                               "--promote-challenger or --drop-challenger)")
        champion = route.champion if route else resolve_version_dir(self.model_dir).name
        champion_dir, _, parts = load_parts(self.model_dir / champion)
        pre, training = parts["preprocessing"], parts["training"]
        cfg = artifact_data_config(pre, Path(args.data_root).resolve())
        if cfg.protocol != "clean":
            raise RetrainError(f"{champion_dir}: trained on the leaky 'seed' protocol (the audit's); not retrained")
        s = cfg.split
        fractions = {"train": s.train, "val": s.val, "test": s.test, "purge_rows": s.purge_rows}
        if cfg.panel is not None:  # the champion's instruments, whatever else the files now hold
            cfg = dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, include=list(pre["tickers"]),
                                                                     exclude=[]))
        labelled = labelled_days(cfg)
        seen = training["dataset"]["splits"]["val"]["end"]
        own_block = (training.get("retrain") or {}).get("plan", {}).get("block_end")
        if own_block and not args.reuse_block:
            seen = max(seen, own_block)  # it was promoted on those days: selected on them
        plan = plan_retrain(labelled, args.compare_weeks, cfg.purge_rows, s.val / (s.train + s.val), seen)
        log.info("comparison block %s to %s (%d days); challenger trains from %s, validates from %s", plan.block_start,
                 plan.block_end, plan.block_days, plan.train_start, plan.val_start)

        challenger_cfg = with_overrides(cfg, {"split": {**fractions, **plan.split()}})
        train_cfg = recorded_config(training["train_config"], f"{champion_dir}/training.json")  # the champion's recipe
        if args.epochs:
            train_cfg = with_overrides(train_cfg, {"max_epochs": args.epochs})
        version = args.version or _now().strftime("r%Y%m%dT%H%M%SZ")
        record = {"champion": champion, "plan": plan.to_dict(), "reused_block": bool(own_block and args.reuse_block)}
        cache, storage = Path(args.cache_root).resolve(), Path(args.storage_path)
        connect()
        t0 = time.perf_counter()
        if args.space:
            challenger_dir = search_challenger(challenger_cfg, Path(args.space), train_cfg.selection_metric,
                                               self.model_dir, version, record, storage, cache, args.cpus_per_worker,
                                               args.num_samples, args.wait_for_resources)
        else:
            challenger_dir = retrain_champion_config(challenger_cfg, parts["model"], train_cfg, self.model_dir, version,
                                                     record, storage, cache, args.cpus_per_worker,
                                                     args.wait_for_resources)
        dataset = cache / json.loads((challenger_dir / "training.json").read_text())["dataset"]["fingerprint"]
        meta = read_metadata(dataset)
        window = {"train": [meta["splits"]["train"]["start"], meta["splits"]["train"]["end"]],
                  "val": [meta["splits"]["val"]["start"], meta["splits"]["val"]["end"]],
                  "comparison_block": [str(plan.block_start), str(plan.block_end)]}

        keys = block_keys(dataset)  # (date, ticker) of every window of the block
        truth = keys.merge(realised(cfg, None, meta.get("tickers")), on=["date", "ticker"], how="left")["label"]
        if truth.isna().any():
            k = keys[truth.isna().to_numpy()].iloc[0]
            raise RetrainError(f"no realised label for {k['ticker']} on block day {k['date']}")
        champ, chal = Predictor.from_artifact(champion_dir), Predictor.from_artifact(challenger_dir)
        if not _same_question(champ.preprocessing, chal.preprocessing):
            raise RetrainError(f"{champion} and {version} answer different questions (label, horizon or index differ)")
        root = Path(args.data_root)
        result = compare(truth.to_numpy().astype(int), block_probabilities(champ, root, keys),
                         block_probabilities(chal, root, keys), keys["date"].to_numpy(), train_cfg.selection_metric,
                         cfg.horizon, args.bootstrap)
        won, reason = result.decide(args.require, args.margin, args.min_gain)
        entry = {"action": "retrain", "champion": champion, "challenger": version, "require": args.require,
                 "threshold": args.min_gain if args.require == "better" else -args.margin, "reason": reason,
                 **result.to_dict(), "challenger_window": window, "dataset": meta["fingerprint"],
                 "reused_block": record["reused_block"]}
        atomic_write_text(challenger_dir / "evaluation" / "retrain.json", json.dumps(entry, indent=2))
        print(f"challenger {version} (trained in {time.perf_counter() - t0:.0f} s): {reason}")
        if not won:
            self.record({**entry, "decision": "refused"})
            print(f"kept champion {champion}; the challenger stays on disk, unpromoted")
            return 0
        if not apps:
            if not self.move("--version", version):
                self.record({**entry, "decision": "failed", "why": "promotion failed"})
                return 1
            self.record({**entry, "decision": "promoted", "why": "no deployment serves the model: promoted on the "
                                                               "comparison block alone"})
            return 0
        stage = ["--shadow"] if args.stage == "shadow" else ["--split", str(args.split_share)]
        if not self.move("--challenger", version, *stage):
            self.record({**entry, "decision": "failed", "why": "the deployment did not take the challenger (an "
                                                             "application may have: check `promote.py --list`)"})
            return 1
        now = _now()
        pend = {**entry, "decision": "challenger", "stage": args.stage, "observe_until": (now + args.observe_for)
                .isoformat(), "give_up_at": (now + args.max_observe_for).isoformat(), "min_outcomes": args.min_outcomes}
        self.record(pend)
        print(f"{version} is now {args.stage} beside {champion} until {now + args.observe_for:%Y-%m-%d %H:%M} UTC; "
              "the next run of this command decides")
        return self.observe(pend) if args.wait else 0

    # -- 2./3. the observation in the deployment -------------------------------------
    def observe(self, pend: dict) -> int:
        from stocktrend.evaluation.outcomes import score_model
        from stocktrend.retraining.state import judge_observation, observation_over

        champion, challenger = pend["champion"], pend["challenger"]
        until = dt.datetime.fromisoformat(pend["observe_until"])
        give_up = dt.datetime.fromisoformat(pend.get("give_up_at", pend["observe_until"]))
        if not observation_over(pend) and not self.args.wait:
            print(f"{challenger} is {pend['stage']} beside {champion} until {until:%Y-%m-%d %H:%M} UTC: nothing to do yet")
            return 0
        while True:
            while _now() < until:
                log.info("observing %s beside %s until %s", challenger, champion, until.isoformat())
                time.sleep(min(30.0, max(0.0, (until - _now()).total_seconds())))
            route, _ = self.serving()
            if route is not None and route.champion == challenger and route.challenger is None:
                # promoted by hand, or promote.py moved the deployment and failed before its record
                latest = (self.model_dir / "latest").read_text().strip()
                if latest != challenger and not self.move("--version", challenger):
                    return 1
                self.record({"action": "observation", "champion": champion, "challenger": challenger,
                             "decision": "promoted", "reason": "the deployment already answers with it (promoted "
                                                               "by hand, or an earlier move not recorded)"})
                return 0
            if route is None or route.champion != champion or route.challenger != challenger:
                self.record({"action": "observation", "champion": champion, "challenger": challenger,
                             "decision": "abandoned", "reason": "the deployment no longer routes this pair (changed "
                                                                "by hand, or no deployment found)"})
                print(f"{challenger}: no deployment runs it beside {champion} any more; observation abandoned")
                return 0
            report = score_model(self.model_dir, data_root=self.args.data_root, n_boot=self.args.bootstrap)
            pair = next((p for p in report["paired"] if {p["a"], p["b"]} == {champion, challenger}), None)
            metric, higher = pend.get("on_block", "cross_entropy"), bool(pend.get("higher_is_better", False))
            decision, reason, diff = judge_observation(pair, challenger, int(pend.get("min_outcomes", 0)),
                                                       _now() >= give_up, metric, higher)
            facts = {"paired_outcomes": pair["n"] if pair else 0, "window": report["window"], "metric": metric,
                     "scores": {v: {m: report["versions"].get(v, {}).get(m) for m in (metric, "accuracy")}
                                for v in (champion, challenger)},
                     "improvement": diff}
            if decision == "extended" and self.args.wait:
                log.info("%s: %s; waiting", challenger, reason)
                until = min(give_up, _now() + dt.timedelta(seconds=30))
                continue
            if decision != "extended" and not self.move("--promote-challenger" if decision == "promoted"
                                                        else "--drop-challenger"):
                return 1
            self.record({"action": "observation", "champion": champion, "challenger": challenger,
                         "decision": decision, "realised": facts, "reason": reason})
            print(f"{challenger}: {decision} ({reason})")
            return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stocktrend.config_io import ConfigError
    from stocktrend.data.errors import DataError
    from stocktrend.evaluation.report import EvaluationError
    from stocktrend.inference.artifact import ArtifactError
    from stocktrend.retraining.lock import ModelLocked, model_lock
    from stocktrend.retraining.plan import RetrainError

    model_dir = Path(args.model).resolve()
    if not model_dir.is_dir():
        print(f"error: {model_dir}: no such model folder", file=sys.stderr)
        return 2
    try:
        with model_lock(model_dir):
            return Job(args, model_dir).run()
    except ModelLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (RetrainError, ArtifactError, EvaluationError, DataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
