"""Model families compared on the same walk-forward test dates of a panel, with paired intervals.

Every candidate (a network family, cell and auxiliary weight at one size) is trained on the
same folds: each fold's dataset built, scaled, selected and balanced on its own training
window, the candidates' runs differing only in the network. Their test blocks, concatenated,
are one longer test period on which each is scored by the mean rank IC per date (the panel
report's headline) and the pooled AUROC, beside the rules a quant tries first. "Beats" means
Romano-Wolf's StepM, over every candidate-opponent pair at once, finds the candidate's mean
rank IC above the opponent's (the paired intervals are shown beside, each on its own); the
opponents are the v2 topology at the same size and the simple rule (one-week reversal or
12-1 momentum) that each fold's validation dates chose (the higher mean rank IC there,
before the fold's test block), its test scores concatenated over the folds.
Multi-task candidates get the volatility comparison of ``evaluation/volatility.py`` too.
What validation would have chosen (the lowest mean validation cross-entropy over folds) is
stated beside what the test says; nothing here is chosen on the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stocktrend.data.store import read_metadata
from stocktrend.data.windows import split_arrays
from stocktrend.evaluation.bootstrap import default_block_length
from stocktrend.evaluation.core import ci_text, date_mean, md_table, paired_mean, resampled_ci, write_report
from stocktrend.evaluation.headline import stepm_pairs
from stocktrend.evaluation.metrics import auroc
from stocktrend.evaluation.panel_metrics import momentum_12_1_score, rank_ic_by_date, reversal_score
from stocktrend.evaluation.panel_report import HINDSIGHT, test_table
from stocktrend.evaluation.volatility import join_tables, log_vol_of, score_volatility, volatility_table

# name -> the network's overrides of the preset and the auxiliary loss weight.
CANDIDATES: dict[str, dict[str, Any]] = {
    "v2": {"model": {}, "aux_weight": 0.0},
    "v2-gru": {"model": {"rnn": "gru"}, "aux_weight": 0.0},
    "v2+vol": {"model": {}, "aux_weight": 1.0},
    "tft": {"model": {"family": "tft"}, "aux_weight": 0.0},
    "tft+vol": {"model": {"family": "tft"}, "aux_weight": 1.0},
}
REFERENCE = "v2"  # the reference's topology: what a new family has to beat
SIMPLE_RULES = ("reversal_1w", "momentum_12_1")
RULE = "simple_rule"  # per fold, the simple rule its validation dates chose
VOL_LABELS = {"trailing_har": "trailing baseline", "linear_features": "linear model on the features",
              "model_minus_baseline": "model - trailing", "model_minus_linear": "model - linear"}


def rule_on_validation(dataset: Path) -> dict[str, Any]:
    """The simple rule with the higher mean rank IC on the fold's validation dates, which end
    a purge gap before its test block: nothing about the test dates enters the choice."""
    val = split_arrays(dataset, "val", mmap=True)
    inst, rows = val["index"][:, 0], val["index"][:, 1]
    close, fwd = np.load(dataset / "close.npy"), np.load(dataset / "forward_returns.npy")
    scores = {"reversal_1w": reversal_score(close, inst, rows), "momentum_12_1": momentum_12_1_score(close, inst, rows)}
    ics = {k: float(rank_ic_by_date(val["dates"], v, fwd[inst, rows]).mean()) for k, v in scores.items()}
    ics = {k: (v if np.isfinite(v) else -np.inf) for k, v in ics.items()}  # a rule with no val dates cannot win
    val_split = read_metadata(dataset)["splits"]["val"]
    return {"rule": max(SIMPLE_RULES, key=lambda k: ics[k]), "val_mean_rank_ic": ics,
            "val_dates": f"{val_split.get('start')} .. {val_split.get('end')}"}


def compare_families(runs: dict[str, list[dict]], datasets: list[Path], out: Path, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
    """``runs``: candidate -> one run per fold (``training.repeat.train_many``'s results, in
    the folds' order). Writes report.json and report.md into ``out``; returns the report."""
    names = list(runs)
    if REFERENCE not in runs:
        raise ValueError(f"the comparison needs the reference candidate {REFERENCE!r} (got {names})")
    tables = [test_table(d, runs[REFERENCE][i]["probs"][:, 1], seed) for i, d in enumerate(datasets)]
    dates, ret, y = (np.concatenate([t[k] for t in tables]) for k in ("dates", "ret", "y"))
    h = int(tables[0]["meta"]["horizon"])
    scores = {n: np.concatenate([r["probs"][:, 1] for r in runs[n]]) for n in names}
    baselines = {k: np.concatenate([t["scores"][k] for t in tables]) for k in tables[0]["scores"] if k != "model"}
    choices = [rule_on_validation(d) for d in datasets]
    baselines[RULE] = np.concatenate([t["scores"][c["rule"]] for t, c in zip(tables, choices)])
    ics = {n: rank_ic_by_date(dates, s, ret) for n, s in {**scores, **baselines}.items()}
    rule = RULE
    rows: dict[str, Any] = {}
    for n in [*names, *baselines]:
        area = resampled_ci(lambda yy, pp: {"auroc": auroc(yy, pp)}, (y, (scores | baselines)[n]),
                            max(200, n_boot // 5), seed, dates=dates, horizon=h)["auroc"]
        entry = {"mean_rank_ic": date_mean(ics[n], h), "share_dates_positive": float((ics[n] > 0).mean()),
                 "auroc": area.to_dict()}
        if n in runs:
            entry["mean_val_ce"] = float(np.mean([r["metrics"].get("val_ce", np.nan) for r in runs[n]]))
            entry["config"] = {k: v for k, v in runs[n][0]["model"].items() if k in ("family", "rnn", "volatility_head")}
            if n != REFERENCE:
                entry[f"minus_{REFERENCE}"] = paired_mean(ics[n], ics[REFERENCE], h)
            entry[f"minus_{rule}"] = paired_mean(ics[n], ics[rule], h)
            if all("volatility_z" in r for r in runs[n]):
                vol = join_tables([volatility_table(d, log_vol_of(d, r["volatility_z"]))
                                   for r, d in zip(runs[n], datasets)])
                entry["volatility"] = score_volatility(vol, n_boot, seed)
        rows[n] = entry
    # Every "beats" call at once: each candidate against the reference and against the rule,
    # StepM over all of them on the dates every scorer has (a higher IC is a lower loss).
    pairs = {**{(n, REFERENCE): f"{n} vs {REFERENCE}" for n in names if n != REFERENCE},
             **{(n, rule): f"{n} vs {rule}" for n in names}}
    common = ics[REFERENCE].index
    for n in [*names, rule]:
        common = common.intersection(ics[n].index)
    familywise = stepm_pairs({k: (ics[b][common] - ics[a][common]).to_numpy() for (a, b), k in pairs.items()},
                             n_boot, seed, default_block_length(len(common), h))
    beats_ref = [n for n in names if n != REFERENCE and familywise["beats"][f"{n} vs {REFERENCE}"]]
    beats_rule = [n for n in names if familywise["beats"][f"{n} vs {rule}"]]
    chosen = min(names, key=lambda n: rows[n]["mean_val_ce"])
    verdict = (f"On {len(np.unique(dates))} walk-forward test dates ({len(datasets)} folds): "
               f"{', '.join(beats_ref) or 'no candidate'} beat{'s' if len(beats_ref) == 1 else ''} the {REFERENCE} "
               f"topology, and {', '.join(beats_rule) or 'none'} beat{'s' if len(beats_rule) == 1 else ''} the "
               f"simple rule each fold's validation dates chose ({', '.join(c['rule'] for c in choices)}) on the mean "
               f"rank IC ({familywise['method']}). Validation (mean cross-entropy "
               f"over the folds) would have chosen {chosen}.")
    vol_lines = [f"{n}: {rows[n]['volatility']['verdict']}" for n in names if "volatility" in rows[n]]
    report = {"kind": "family_comparison", "candidates": {n: CANDIDATES.get(n) for n in names},
              "reference": REFERENCE, "simple_rule": rule, "simple_rule_per_fold": choices,
              "test_dates": int(len(np.unique(dates))),
              "test_windows": int(len(y)), "fold_datasets": [str(d) for d in datasets],
              "folds": [{s: tables[i]["meta"]["splits"][s] for s in ("train", "val", "test")}
                                                     for i in range(len(datasets))],
              "scores": rows, "beats_reference": beats_ref, "beats_simple_rule": beats_rule, "familywise": familywise,
              "chosen_on_validation": chosen, "verdict": verdict, "volatility_verdicts": vol_lines,
              "hindsight": HINDSIGHT}
    return write_report(out, report, render(report))


def render(r: dict[str, Any]) -> str:
    rule, ref = r["simple_rule"], r["reference"]
    rows = [[n, ci_text(e["mean_rank_ic"], "+.4f"), f"{e['share_dates_positive']:.1%}", ci_text(e["auroc"]),
             f"{e['mean_val_ce']:.4f}" if "mean_val_ce" in e else "-",
             *(ci_text(e[k], "+.4f") if k in e else "-" for k in (f"minus_{ref}", f"minus_{rule}"))]
            for n, e in r["scores"].items()]
    lines = ["# Model families on the same walk-forward dates", "", r["verdict"], "", r["hindsight"], "",
             f"{r['test_windows']} test windows over {r['test_dates']} dates. Rank IC: Spearman correlation per date "
             "between the score and the realised h-day return; intervals: 95% block bootstrap over dates, "
             "differences paired.", "",
             *md_table(["scorer", "mean rank IC [95%]", "dates > 0", "AUROC [95%]", "mean val CE",
                        f"minus {ref} [95%]", f"minus {rule} [95%]"], rows)]
    if r["volatility_verdicts"]:
        lines += ["", "## Volatility forecasts of the multi-task candidates (pooled folds)", ""]
        lines += [f"- {v}" for v in r["volatility_verdicts"]]
        for n, e in r["scores"].items():
            cs = e.get("volatility", {}).get("cross_sectional_rank_corr")
            if cs:
                lines.append(f"- {n}: cross-sectional rank correlation of volatility per date, " + ", ".join(
                    f"{VOL_LABELS.get(k, k)} {ci_text(v, '+.4f')}" for k, v in cs.items()))
    return "\n".join(lines) + "\n"
