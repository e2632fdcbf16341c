"""The honest report of a panel model on its test split (and pooled over walk-forward folds).

The question a cross-sectional model answers is an ordering: which instruments will do
better than the others this week. So the headline is the rank information coefficient (IC)
per date between the predicted up-probability and the realised h-day return, its mean over
test dates with a block-bootstrap interval and the share of dates it is positive; beside it
the same for the rules a quant tries first (one-week reversal, 12-1 momentum) and for
logistic regression and gradient boosting pooled on the same features, with a paired
interval on the difference; pooled and per-instrument accuracy, AUROC and MCC; and a
long-short book from prices against an equal-weight long book of the same instruments.
Nothing here is fitted on, or chooses anything from, the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stocktrend.data.store import read_metadata
from stocktrend.data.windows import distinct_windows, split_arrays
from stocktrend.evaluation import baselines as bl
from stocktrend.evaluation import plots
from stocktrend.evaluation.bootstrap import default_block_length
from stocktrend.evaluation.core import ci_text, ic_table, md_table, resampled_ci, write_report
from stocktrend.evaluation.headline import panel_headline
from stocktrend.evaluation.metrics import scalar_metrics
from stocktrend.evaluation.panel_metrics import long_short, momentum_12_1_score, rank_ic_by_date, reversal_score
from stocktrend.evaluation.report_text import planted_line
from stocktrend.evaluation.selection import markdown_lines as selection_lines
from stocktrend.evaluation.volatility import markdown_lines

HINDSIGHT = ("This universe is today's large caps, chosen knowing they survived and grew: any long-only figure "
             "(the equal-weight book above all) is flattered by that hindsight; the long-short book and the rank IC "
             "compare the instruments with each other and are less exposed to it, not immune.")
METRICS = ("accuracy", "balanced_accuracy", "auroc", "mcc")


def _pooled_fit(dataset: Path, test_last: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The single-stock baselines' logistic regression and gradient boosting (same fixed
    hyperparameters, ``baselines.classifiers``) on the last day of each distinct training
    window of all instruments (oversampled copies dropped), scored on the test windows."""
    x, y, _ = distinct_windows(dataset, "train", last_day_only=True)
    out = {}
    for name, model in bl.classifiers(seed).items():
        model.fit(np.asarray(x, np.float64), y)
        out[name] = model.predict_proba(test_last)[:, 1]
    return out


def test_table(dataset: Path, p_up: np.ndarray, seed: int) -> dict[str, Any]:
    """Everything the report needs about the test windows, the model's and the baselines' scores."""
    meta = read_metadata(dataset)
    test = split_arrays(dataset, "test", mmap=False)
    inst, rows = test["index"][:, 0], test["index"][:, 1]
    close = np.load(dataset / "close.npy")
    fwd = np.load(dataset / "forward_returns.npy")
    scores = {"model": p_up, "reversal_1w": reversal_score(close, inst, rows),
              "momentum_12_1": momentum_12_1_score(close, inst, rows),
              **_pooled_fit(dataset, np.asarray(test["X"][:, -1, :], np.float64), seed)}
    return {"meta": meta, "dates": test["dates"], "instrument": inst, "rows": rows, "y": test["y"].argmax(1),
            "ret": fwd[inst, rows].astype(np.float64), "scores": scores, "close": close,
            "calendar": np.load(dataset / "calendar.npy")}


def score_table(t: dict[str, Any], n_boot: int, seed: int, cost_bps: float,
                staggered: bool) -> tuple[dict[str, Any], dict[str, pd.Series]]:
    """(the report's figures, each scorer's rank IC per date) from a test table."""
    h, meta = int(t["meta"]["horizon"]), t["meta"]
    ics = {name: rank_ic_by_date(t["dates"], s, t["ret"]) for name, s in t["scores"].items()}
    ic_section = ic_table(ics, h)
    headline = panel_headline(ics, n_boot, seed, default_block_length(len(ics["model"]), h))
    for name, beaten in headline["beats"].items():
        ic_section[name]["model_beats_it"] = beaten  # StepM's call, familywise over all opponents
    # Classification figures pooled over instruments, intervals over dates.
    y, p = t["y"], t["scores"]["model"]

    def figures(yy, pp):
        return {k: v for k, v in scalar_metrics(yy, pp).items() if k in METRICS}

    def ci(mask, boots):
        return {k: v.to_dict() for k, v in resampled_ci(figures, (y[mask], p[mask]), boots, seed,
                                                          dates=t["dates"][mask], horizon=h).items()}

    per_instrument = {ticker: ci(t["instrument"] == i, max(200, n_boot // 5))
                      for i, ticker in enumerate(meta["tickers"]) if (t["instrument"] == i).sum() >= 50}
    books = {name: long_short(t["rows"], t["instrument"], s, t["close"], h, cost_bps, staggered)
             for name, s in t["scores"].items()}
    days = t["calendar"][books["model"]["first_row"]:][:len(books["model"]["curve"]["long_short"])]
    return {
        "rank_ic": ic_section, "headline": headline,
        "test": {"pooled": ci(np.ones(len(y), bool), n_boot), "per_instrument": per_instrument,
                 "windows": int(len(y)), "dates": int(len(np.unique(t["dates"]))), "share_label_1": float(y.mean())},
        "backtest": {name: {k: v for k, v in b.items() if k != "curve"} for name, b in books.items()},
        "curves": {"dates": [str(d)[:10] for d in days], **{name: b["curve"] for name, b in books.items()}},
        "verdict": headline["verdict"],
        "hindsight": HINDSIGHT,
    }, ics


def choice_lines(folds: list[dict] | None) -> list[str]:
    """The table of what each fold's nested search chose, and on which dates."""
    if not folds or "chosen" not in folds[0]:
        return []
    lines = ["", "## Choices per fold (each made on its own validation dates)", "",
             "| fold | trained to | validated on | tested on | trials | chosen trial, epoch | validation score | "
             "configuration |", "|---|---|---|---|---|---|---|---|"]
    for f in folds:
        c = f["chosen"]
        config = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in sorted(c["config"].items()))
        lines.append(f"| {f['fold']} | {f['train']['end']} | {f['val']['start']} to {f['val']['end']} | "
                     f"{f['test']['start']} to {f['test']['end']} | {c['trials']} | {c['trial_id']}, {c['epoch']} | "
                     f"{c['metric']} {c['score']:.4f} | {config} |")
    return lines


def render_markdown(r: dict[str, Any], title: str) -> str:
    ic_rows = []
    for name, e in r["rank_ic"].items():
        d = e.get("model_minus_this")
        beats = "yes" if e.get("model_beats_it") else "no" if "model_beats_it" in e else "- (not an opponent)"
        ic_rows.append([name, ci_text(e["mean"], "+.4f"), f"{e['share_positive']:.1%}",
                        ci_text(d, "+.4f") if d else "-", beats if d else "-"])
    bm, ew = r["backtest"]["model"], r["backtest"]["model"]["equal_weight_long"]
    book_rows = [[name, f"{b['long_short']['total_return']:+.1%}", f"{b['long_short']['annual_return']:+.1%}",
                  f"{b['long_short']['sharpe']:.2f}", f"{b['long_short']['max_drawdown']:.1%}",
                  f"{b['turnover_per_rebalance']:.2f}"] for name, b in r["backtest"].items()]
    book_rows.append(["equal-weight long (same instruments)", f"{ew['total_return']:+.1%}",
                      f"{ew['annual_return']:+.1%}", f"{ew['sharpe']:.2f}", f"{ew['max_drawdown']:.1%}", "-"])
    lines = [f"# {title}", "", *([f"> {r['policy']}", ""] if r.get("policy") else []), r["verdict"], "",
             *(f"> {line}" for line in planted_line(r)),
             *([""] if r.get("planted") else []), r["hindsight"], "",
             f"{r['test']['windows']} test windows over {r['test']['dates']} dates; label: {r.get('label_rule', '')}.",
             "", "## Rank IC per date (Spearman, predicted score vs realised return), mean over dates", "",
             f"Headline: {r['headline']['method']}; 'model beats it' is its call. The intervals are each on its own.",
             "", *md_table(["scorer", "mean IC [95% interval]", "share of dates > 0", "model - this [95%]",
                            "model beats it"], ic_rows),
             "", "![rank IC per date](rank_ic.png) ![mean return by score quintile](quintiles.png)",
             "", "## Classification, pooled over instruments (intervals resample whole dates)", "",
             *md_table(["metric", "value [95% interval]"], [[k, ci_text(v)] for k, v in r["test"]["pooled"].items()]),
             "", "## Long-short book from prices (top third long, bottom third short)", "",
             f"Signals known at a date's close trade at the {bm['execution'].replace('_', ' ')}, held "
             f"{bm['holding_days']} days; {bm['cost_bps']:g} bps per side on every trade, shorts pay "
             f"{bm['borrow_bps_per_year']:g} bps a year to borrow; "
             + ("staggered books, one per start day, summed into one daily portfolio. " if bm["staggered"] else "")
             + "Daily values; no rate is subtracted from the Sharpe ratios (the long-short book is self-financing).",
             "", "![long-short books](equity.png)", "",
             *md_table(["scorer", "total return", "annual", "Sharpe", "max drawdown", "turnover per rebalance"],
                       book_rows),
             "", "## Per instrument (accuracy, AUROC)", "",
             *md_table(["instrument", "accuracy", "AUROC"], [[t, ci_text(m["accuracy"]), ci_text(m["auroc"])]
                                                              for t, m in r["test"]["per_instrument"].items()])]
    lines += choice_lines(r.get("folds"))
    vol = markdown_lines(r.get("volatility"))
    sel = selection_lines(r.get("selection"))
    return "\n".join(lines + ([""] + vol if vol else []) + ([""] + sel if sel else [])) + "\n"


def evaluate_panel(dataset: Path, p_up: np.ndarray, out: Path, n_boot: int, seed: int, cost_bps: float,
                   staggered: bool, header: dict[str, Any]) -> dict[str, Any]:
    table = test_table(dataset, p_up, seed)
    figures, ics = score_table(table, n_boot, seed, cost_bps, staggered)
    report = {**header, "layout": "panel", "label": table["meta"].get("label"),
              "label_rule": table["meta"].get("label_rule"), **figures}
    return _write(report, table, ics, out, "Panel model on its test split")


RETRAINED_POLICY = ("Walk-forward: a fixed configuration retrained on each fold's training window, its epoch chosen "
                    "on that fold's validation dates. If a search chose the configuration on dates inside these test "
                    "blocks, the network's figures are optimistic (the baselines' settings are fixed in code); "
                    "`tune.py --walk-forward K` nests the search instead.")
NESTED_POLICY = ("Nested walk-forward: every fold's configuration and epoch were chosen by a search of its own, "
                 "trained before and validated on dates that end a purge gap before its test block; each choice is "
                 "listed under 'Choices per fold'. Nothing was chosen on a test date.")


def walk_forward_report(runs: list[dict], datasets: list[Path], out: Path, n_boot: int, cost_bps: float,
                        seed: int = 0, staggered: bool = False, choices: list[dict] | None = None) -> dict[str, Any]:
    """Every fold's test windows scored by its own model (each fold's dataset built, scaled,
    selected and balanced on its own training window), pooled. ``choices``: what a nested
    search chose per fold (``tuning.nested``); without them the configuration was fixed
    beforehand, and the report's policy says what that means."""
    tables = [test_table(d, run["probs"][:, 1], seed) for run, d in zip(runs, datasets)]
    for d, t in zip(datasets[1:], tables[1:]):
        if not np.array_equal(t["calendar"], tables[0]["calendar"]):
            raise ValueError(f"fold dataset {d} has another calendar than {datasets[0]}: its book cannot be pooled")
    # Consecutive, non-overlapping test blocks: concatenated they are one longer test period.
    joined = {"meta": tables[0]["meta"], "close": tables[0]["close"], "calendar": tables[0]["calendar"],
              **{k: np.concatenate([t[k] for t in tables]) for k in ("dates", "instrument", "rows", "y", "ret")},
              "scores": {k: np.concatenate([t["scores"][k] for t in tables]) for k in tables[0]["scores"]}}
    figures, ics = score_table(joined, n_boot, seed, cost_bps, staggered)
    report = {"kind": "nested_walk_forward" if choices else "walk_forward",
              "policy": NESTED_POLICY if choices else RETRAINED_POLICY,
              "folds": [{"fold": i, **{s: read_metadata(d)["splits"][s] for s in ("train", "val", "test")},
                         "best_val_ce": run["metrics"].get("val_ce"), **({"chosen": choices[i]} if choices else {})}
                        for i, (run, d) in enumerate(zip(runs, datasets))],
              "label": tables[0]["meta"].get("label"), "label_rule": tables[0]["meta"].get("label_rule"),
              **figures}
    title = "nested walk-forward" if choices else "walk-forward"
    return _write(report, joined, ics, out, f"Panel model, {title} over {len(runs)} folds (pooled test dates)")


def _write(report: dict, table: dict, ics: dict[str, pd.Series], out: Path, title: str) -> dict[str, Any]:
    """The report's files and plots: the rank IC per date, returns by score quintile, the books."""
    tickers = np.asarray(report.get("tickers") or table["meta"]["tickers"])
    frame = pd.DataFrame({"date": table["dates"], "instrument": tickers[table["instrument"]], "label": table["y"],
                          "realised_return": table["ret"], **{f"score_{k}": v for k, v in table["scores"].items()}})
    curves, rule = report["curves"], "momentum_12_1"
    days = pd.DatetimeIndex(curves["dates"])
    plots.equity_curves({"model long-short": pd.Series(curves["model"]["long_short"], index=days),
                         f"{rule} long-short": pd.Series(curves[rule]["long_short"], index=days),
                         "equal-weight long": pd.Series(curves["model"]["equal_weight_long"], index=days)},
                        out / "equity.png", "books from prices on the test dates", dashed=("equal-weight long",))
    plots.rank_ic_per_date({k: ics[k] for k in ("model", rule)}, out / "rank_ic.png")
    plots.quintile_returns(table["dates"], table["ret"], {k: table["scores"][k] for k in ("model", rule)},
                           out / "quintiles.png")
    return write_report(out, report, render_markdown(report, title), frame)
