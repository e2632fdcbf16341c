"""Retrain a model on the rows its sources now hold; the challenger replaces the champion only
if it wins on days neither has seen, then only after a period in the deployment.

    python ray_jobs/retrain.py --model models/<name> [--compare-weeks 26] [--require better|not-worse]
                               [--stage shadow|split] [--observe 10d] [--min-outcomes N] [--wait]
    ray job submit --working-dir . -- python ray_jobs/retrain.py --model models/<name>

Each run does the next step of the model's life, read from models/<name>/promotions.jsonl
(so the same command on a schedule is idempotent):

1. Nothing pending: rebuild the dataset from the serving champion's own dataset config with
   the rows its source files hold now. The last --compare-weeks of labelled days are the
   comparison block; the challenger trains and validates on explicit dates before it (behind
   a purge gap, stored in its artifact) with the champion's model and training configuration,
   through Ray Train. Both versions score the block as they serve (their own features and
   scalers); the challenger wins when the paired block-bootstrap interval of its improvement
   on the training selection metric lies above 0 (--require better) or above -margin
   (not-worse). A loser is kept on disk, refused, and logged with both scores. A winner enters
   every deployment serving the model as shadow (or a --split share) until --observe has passed;
   with no deployment it is promoted at once.
2. A challenger pending, period not over: says so and exits 0 (--wait: sleeps until it is).
3. Period over: scores the realised outcomes of both versions' logged predictions on the same
   days (as ray_jobs/score_outcomes.py does); once --min-outcomes are paired, the challenger is
   promoted unless it was significantly worse live, in which case it is dropped.

Exit status: 0 the step is done (refused, waiting and dropped included); 2 the retrain cannot
run as asked (the message says why); 3 another retrain of this model holds its lock; 1 a move
of a deployment failed (nothing recorded as done that did not take effect).
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
    ap.add_argument("--compare-weeks", type=float, default=26, help="length of the comparison block (weeks)")
    ap.add_argument("--require", choices=["better", "not-worse"], default="better",
                    help="better: the improvement's interval lies above 0; not-worse: above -margin")
    ap.add_argument("--margin", type=float, default=0.01,
                    help="not-worse margin, in the selection metric's units (nats of cross-entropy, AUROC)")
    ap.add_argument("--epochs", type=int, help="max epochs (default: the champion's training configuration)")
    ap.add_argument("--space", help="search for the challenger with this search space (Ray Tune + Optuna + ASHA) on "
                                    "the challenger's window, instead of retraining the champion's configuration")
    ap.add_argument("--num-samples", type=int, help="trials of the --space search (default: the space file's)")
    ap.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs of the training worker")
    ap.add_argument("--storage-path", default=str(ROOT / "runs" / "retrain"), help="Ray Train storage")
    ap.add_argument("--version", help="the challenger's version name (default: r<UTC time>)")
    ap.add_argument("--stage", choices=["shadow", "split"], default="shadow",
                    help="how a winning challenger enters the deployment: scores every request, or answers a share")
    ap.add_argument("--split-share", type=float, default=0.1, help="the share it answers with --stage split")
    ap.add_argument("--observe", default="10d", help="how long it stays there before the decision (30s, 6h, 10d)")
    ap.add_argument("--min-outcomes", type=int, default=0,
                    help="realised outcomes both versions must have on the same days before promotion")
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
        args.observe_for = parse_duration(args.observe)
    except ValueError as err:
        ap.error(f"--observe: {err}")
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


class Job:
    def __init__(self, args: argparse.Namespace, model_dir: Path):
        from stocktrend.serving import control

        self.args, self.model_dir, self.promote = args, model_dir, _promote_module()
        self.dashboard = None
        if not args.no_serve:
            try:
                self.dashboard, _ = control.find_dashboard(args.dashboard)
            except control.ServeControlError as err:
                from stocktrend.retraining.plan import RetrainError

                raise RetrainError(str(err)) from None

    # -- the promotion log and the deployment, through promote.py --------------------
    def record(self, entry: dict) -> None:
        from stocktrend.data.store import atomic_write_text

        history = [*self.promote.read_history(self.model_dir), {"time": _now().isoformat(timespec="seconds"), **entry}]
        atomic_write_text(self.model_dir / self.promote.HISTORY, "".join(json.dumps(h) + "\n" for h in history))

    def move(self, *flags: str) -> bool:
        where = ["--dashboard", self.dashboard] if self.dashboard else ["--no-serve"]
        return self.promote.main(["--model", str(self.model_dir), *flags, *where]) == 0

    def run(self) -> int:
        from stocktrend.retraining.state import pending

        pend = pending(self.promote.read_history(self.model_dir))
        return self.observe(pend) if pend else self.retrain()

    # -- 1. retrain and compare ----------------------------------------------------------
    def retrain(self) -> int:
        from stocktrend.cluster.connect import connect
        from stocktrend.cluster.resources import ResourcesUnavailable
        from stocktrend.config_io import config_from_dict, with_overrides
        from stocktrend.data.build import prepare
        from stocktrend.data.cache import build_cached
        from stocktrend.data.store import atomic_write_text, read_metadata
        from stocktrend.evaluation.outcomes import realised
        from stocktrend.evaluation.report import artifact_data_config
        from stocktrend.inference.artifact import load_parts, resolve_version_dir
        from stocktrend.inference.predictor import Predictor
        from stocktrend.models.config import model_config_from_metadata
        from stocktrend.retraining.compare import block_keys, block_probabilities, compare
        from stocktrend.retraining.plan import RetrainError, plan_retrain
        from stocktrend.training.config import TrainConfig
        from stocktrend.training.export import export_artifact
        from stocktrend.training.repeat import train_many

        args = self.args
        route, apps = self.promote.serving_route(self.model_dir, self.dashboard)
        champion = route.champion if route else resolve_version_dir(self.model_dir).name
        champion_dir, _, parts = load_parts(self.model_dir / champion)
        pre, training = parts["preprocessing"], parts["training"]
        cfg = artifact_data_config(pre, Path(args.data_root).resolve())
        if cfg.protocol != "clean":
            raise RetrainError(f"{champion_dir}: trained on the leaky 'seed' protocol (the audit's); not retrained")
        s = cfg.split
        fractions = {"train": s.train, "val": s.val, "test": s.test, "purge_rows": s.purge_rows}
        free = with_overrides(cfg, {"split": fractions})
        if cfg.panel is not None:
            from stocktrend.data.panel import build_panel
            from stocktrend.data.panel_build import labels_and_ends

            labelled = labels_and_ends(free, build_panel(free))[3]
        else:
            labelled = prepare(free).labelled_rows
        plan = plan_retrain(labelled, args.compare_weeks, cfg.purge_rows, s.val / (s.train + s.val),
                            training["dataset"]["splits"]["val"]["end"])
        log.info("comparison block %s to %s (%d days); challenger trains from %s, validates from %s", plan.block_start,
                 plan.block_end, plan.block_days, plan.train_start, plan.val_start)
        challenger_cfg = with_overrides(cfg, {"split": {**fractions, **plan.split()}})
        train_cfg = config_from_dict(TrainConfig, training["train_config"], f"{champion_dir}/training.json")
        if args.epochs:
            train_cfg = with_overrides(train_cfg, {"max_epochs": args.epochs})
        version = args.version or _now().strftime("r%Y%m%dT%H%M%SZ")
        record = {"champion": champion, "plan": plan.to_dict()}
        connect()
        t0 = time.perf_counter()
        try:
            if args.space:
                challenger_dir = self.search(challenger_cfg, train_cfg.selection_metric, version, record)
            else:
                dataset = build_cached(challenger_cfg, ROOT / "datasets" / "cache")
                shape_free = {k: v for k, v in parts["model"].items() if k not in ("n_features", "seq_len", "n_classes")}
                model_cfg = model_config_from_metadata("v2", read_metadata(dataset), **shape_free)
                (run,) = train_many([{"name": f"{self.model_dir.name}-{version}", "dataset": dataset,
                                      "model": model_cfg, "train": train_cfg}], Path(args.storage_path),
                                    cpus_per_worker=args.cpus_per_worker, wait_s=args.wait_for_resources)
                challenger_dir = export_artifact(
                    run["checkpoint"], dataset, self.model_dir.parent, self.model_dir.name, history=run["history"],
                    version=version, make_latest=False,
                    extra={"engine": "ray-train x1", "train_seconds": round(time.perf_counter() - t0, 1),
                           "retrain": record})
        except ResourcesUnavailable as err:
            raise RetrainError(str(err)) from None
        chal_training = json.loads((challenger_dir / "training.json").read_text())
        dataset = ROOT / "datasets" / "cache" / chal_training["dataset"]["fingerprint"]  # build_cached's folder
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
        if champ.preprocessing["label_rule"] != chal.preprocessing["label_rule"]:
            raise RetrainError(f"{champion} and {version} answer different questions (label rules differ)")
        root = Path(args.data_root)
        result = compare(truth.to_numpy().astype(int), block_probabilities(champ, root, keys),
                         block_probabilities(chal, root, keys), keys["date"].to_numpy(), train_cfg.selection_metric,
                         cfg.horizon, args.bootstrap)
        won, reason = result.decide(args.require, args.margin)
        entry = {"action": "retrain", "champion": champion, "challenger": version, "require": args.require,
                 **({"margin": args.margin} if args.require == "not-worse" else {}), "reason": reason,
                 **result.to_dict(), "challenger_window": window, "dataset": meta["fingerprint"]}
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
            self.record({**entry, "decision": "failed", "why": "the deployment did not take the challenger"})
            return 1
        until = _now() + args.observe_for
        pend = {**entry, "decision": "challenger", "stage": args.stage, "observe_until": until.isoformat(),
                "min_outcomes": args.min_outcomes}
        self.record(pend)
        print(f"{version} is now {args.stage} beside {champion} until {until:%Y-%m-%d %H:%M} UTC; "
              "the next run of this command decides")
        return self.observe(pend) if args.wait else 0

    def search(self, challenger_cfg, metric: str, version: str, record: dict) -> Path:
        """The challenger as the best trial of a search on its window: the space's own file,
        with its dataset replaced by the challenger's config (written beside the experiment,
        since every trial reloads the space from its file)."""
        import dataclasses

        import yaml

        from stocktrend.cluster.resources import ResourcesUnavailable
        from stocktrend.config_io import config_to_dict, read_yaml, with_overrides
        from stocktrend.data.store import atomic_write_text
        from stocktrend.retraining.plan import RetrainError
        from stocktrend.tuning.run import SearchOptions, export_best, fit_concurrency, run_search
        from stocktrend.tuning.space import load_space

        raw = read_yaml(Path(self.args.space))
        if "split" in (raw.get("data") or {}) or any(k.startswith("data.split") for k in raw.get("space") or {}):
            raise RetrainError(f"{self.args.space}: sets data.split, which a retrain fixes to its own dates")
        name = f"{self.model_dir.name}-{version}"
        experiment = Path(self.args.storage_path).resolve() / name
        experiment.mkdir(parents=True, exist_ok=True)
        atomic_write_text(experiment / "dataset.yaml", yaml.safe_dump(config_to_dict(challenger_cfg), sort_keys=False))
        atomic_write_text(experiment / "space.yaml", yaml.safe_dump({**raw, "dataset": str(experiment / "dataset.yaml")},
                                                                    sort_keys=False))
        space = load_space(experiment / "space.yaml")
        space = dataclasses.replace(space, train=with_overrides(space.train, {"selection_metric": metric}))
        opts = SearchOptions(num_samples=self.args.num_samples, metric=metric, cpus_per_trial=self.args.cpus_per_worker)
        try:
            opts = fit_concurrency(space, opts, self.args.wait_for_resources)
        except ResourcesUnavailable as err:
            raise RetrainError(str(err)) from None
        cache = ROOT / "datasets" / "cache"
        results = run_search(space, opts, experiment.parent, name, cache)
        if results.num_errors == len(results):
            raise RetrainError(f"all {len(results)} trials of the search failed; see {experiment}")
        return export_best(results, space, metric, experiment, cache, self.model_dir.parent, self.model_dir.name,
                           version=version, make_latest=False,
                           extra={"engine": f"ray-tune x{len(results)}", "retrain": {**record, "space": self.args.space}})

    # -- 2./3. the observation in the deployment -------------------------------------
    def observe(self, pend: dict) -> int:
        from stocktrend.evaluation.outcomes import score_model
        from stocktrend.retraining.state import observation_over

        champion, challenger = pend["champion"], pend["challenger"]
        until = dt.datetime.fromisoformat(pend["observe_until"])
        if not observation_over(pend):
            if not self.args.wait:
                print(f"{challenger} is {pend['stage']} beside {champion} until {until:%Y-%m-%d %H:%M} UTC: "
                      "nothing to do yet")
                return 0
            while not observation_over(pend):
                log.info("observing %s beside %s until %s", challenger, champion, until.isoformat())
                time.sleep(min(30.0, max(0.0, (until - _now()).total_seconds())))
        route, _ = self.promote.serving_route(self.model_dir, self.dashboard)
        if route is None or route.champion != champion or route.challenger != challenger:
            self.record({"action": "observation", "champion": champion, "challenger": challenger,
                         "decision": "abandoned", "reason": "the deployment no longer routes this pair (changed "
                                                            "by hand, or no deployment found)"})
            print(f"{challenger}: no deployment runs it beside {champion} any more; observation abandoned")
            return 0
        report = score_model(self.model_dir, data_root=self.args.data_root, n_boot=self.args.bootstrap)
        pair = next((p for p in report["paired"] if {p["a"], p["b"]} == {champion, challenger}), None)
        n = pair["n"] if pair else 0
        need = int(pend.get("min_outcomes", 0))
        facts = {"paired_outcomes": n, "window": report["window"],
                 "accuracy": {v: report["versions"].get(v, {}).get("accuracy") for v in (champion, challenger)}}
        if n < need:
            self.record({"action": "observation", "champion": champion, "challenger": challenger,
                         "decision": "extended", "realised": facts,
                         "reason": f"{n} realised outcomes on the same days, {need} needed"})
            print(f"{challenger}: {n} of {need} realised outcomes so far; the observation goes on")
            return 0
        diff = None
        if pair:  # challenger minus champion, whichever order the report pairs them in
            d = pair["accuracy_a_minus_b"]
            sign = 1 if pair["a"] == challenger else -1
            lo, hi = (d["low"], d["high"]) if sign == 1 else (-d["high"] if d["high"] is not None else None,
                                                              -d["low"] if d["low"] is not None else None)
            diff = {"point": sign * d["point"], "low": lo, "high": hi}
        worse = diff is not None and diff["high"] is not None and diff["high"] < 0
        facts["accuracy_challenger_minus_champion"] = diff
        if not self.move("--drop-challenger" if worse else "--promote-challenger"):
            return 1
        decision = "dropped" if worse else "promoted"
        reason = (f"{n} realised outcomes on the same days; accuracy difference "
                  + (f"{diff['point']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff and diff["low"] is not None
                     else "not defined") + (": significantly worse live" if worse else ": not worse live"))
        self.record({"action": "observation", "champion": champion, "challenger": challenger, "decision": decision,
                     "realised": facts, "reason": reason})
        print(f"{challenger} {decision} ({reason})")
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
