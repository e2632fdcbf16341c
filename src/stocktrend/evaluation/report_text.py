"""The report as text: the markdown page, the console summary and the plain-words reading."""

from __future__ import annotations

from stocktrend.evaluation.core import ci_text, md_table
from stocktrend.evaluation.core import fmt as _fmt
from stocktrend.evaluation.selection import markdown_lines as selection_lines
from stocktrend.evaluation.volatility import markdown_lines


def _interpretation(r: dict) -> list[str]:
    t, ds = r["test"], r["dataset"]
    m = t["metrics"]
    h = ds["horizon"]
    lines = [
        f"{t['n']} test windows from {ds['test']['start']} to {ds['test']['end']}; {t['share_up_true']:.0%} of them "
        f"went up. One window ends every trading day and labels span {h} days, so there are only about "
        f"{t['n'] // h} non-overlapping labels: intervals are wide for a reason.",
        f"Accuracy {ci_text(m['accuracy'])}; "
        f"always predicting up would have scored {t['share_up_true']:.3f}. AUROC {_fmt(m['auroc']['point'])} and "
        f"MCC {_fmt(m['mcc']['point'])} measure skill independent of the class balance (0.5 and 0 = none).",
    ]
    if r.get("headline"):
        lines.append(r["headline"]["verdict"] + " The baselines' other metrics are secondary: intervals, no verdict.")
    if "backtest" in r:
        b = r["backtest"]
        lines.append(
            f"Trading the signals ({b['settings'].get('execution', 'same_close').replace('_', ' ')}) after "
            f"{b['settings']['cost_bps_per_side']:g} bps costs: long/flat "
            f"{b['long_flat']['total_return']:+.1%} (Sharpe {_fmt(b['long_flat']['sharpe'], '.2f')}), long/short "
            f"{b['long_short']['total_return']:+.1%} (Sharpe {_fmt(b['long_short']['sharpe'], '.2f')}), against "
            f"buy-and-hold {b['buy_and_hold']['total_return']:+.1%} (Sharpe {_fmt(b['buy_and_hold']['sharpe'], '.2f')})"
            " over the same days. A backtest over one period is one draw, not an expectation."
        )
    val = r["validation"]["metrics"].get("val_acc")
    if val is not None:
        lines.append(f"Validation accuracy (used for choosing) was {val:.3f}; "
                     f"test accuracy is {m['accuracy']['point']:.3f}.")
    lines.append("This is one training run on one test period; retraining with other seeds and walk-forward folds "
                 "tells how much of any difference is luck.")
    if ds.get("leaky"):
        lines.insert(0, "WARNING: this dataset uses the LEAKY 'seed' protocol (test windows overlap training): "
                        "these numbers are NOT an estimate of out-of-sample performance.")
    return lines


def headline_lines(h: dict | None) -> list[str]:
    """The pre-declared headline: its metric for the model and each opponent, and StepM's verdict."""
    if not h:
        return []
    rows = [["model", f"{h['model']:.4f}", "-", "-"]] + [
        [k, f"{v:.4f}", f"{h['improvement'][k]:+.4f}", "yes" if h["beats"][k] else "no"] for k, v in h["opponents"].items()]
    return ["## Headline", "", h["verdict"], "", f"Method: {h['method']}.", "",
            *md_table(["opponent", h["metric"], "model's improvement on it", "beaten"], rows), ""]


BOOK_COLUMNS = (("total_return", "+.1%"), ("annualised_return", "+.1%"), ("sharpe", ".2f"), ("max_drawdown", ".1%"),
                ("win_rate", ".0%"), ("turnover_per_year", ".1f"), ("exposure", ".0%"))


def render_markdown(r: dict) -> str:
    m, ds, b = r["model"], r["dataset"], r["bootstrap"]
    L = [f"# Evaluation: {m['name']} / {m['version']}", "", f"> {r['policy']}", ""]
    if ds["leaky"]:
        L += ["> **LEAKY DATASET ('seed' protocol): not an out-of-sample estimate.**", ""]
    L += [f"> {line}" for line in planted_line(r)] + ([""] if r.get("planted") else [])
    L += ["## Data", "",
          f"- dataset `{ds['dir']}`, fingerprint `{ds['fingerprint'][:12]}` (matches training.json), "
          f"protocol `{ds['protocol']}`",
          f"- test split {ds['test'].get('start')} .. {ds['test'].get('end')}: {r['test']['n']} windows, "
          f"{_fmt(r['test']['share_up_true'], '.1%')} up; horizon {ds['horizon']} days, window {ds['seq_len']} days",
          f"- intervals: 95% {b['method']}, {b['n_boot']} resamples, block {b['block']} windows "
          f"(rule {b['block_rule']}), seed {b['seed']}", ""]
    val = r["validation"]
    L += ["## Validation (from training, used for choosing the epoch)", "", f"Source: {val['source']}.", ""]
    if val["metrics"]:
        L += [*md_table(["metric", "value"], [[k, v if isinstance(v, list) else _fmt(v)]
                                              for k, v in val["metrics"].items()]), ""]
    L += ["## Test metrics", "", *md_table(["metric", "model [95% CI]", "undefined resamples"],
                                           [[k, ci_text(v), v["n_nan"]] for k, v in r["test"]["metrics"].items()])]
    cm = r["test"]["confusion_matrix"]
    L += ["", f"Confusion matrix (rows true down/up, columns predicted down/up): {cm}", "",
          "![confusion matrix](confusion_matrix.png) ![ROC](roc.png) ![calibration](calibration.png)", ""]
    L += headline_lines(r.get("headline"))
    L += ["## Baselines (same test windows), secondary", "",
          "Paired 95% block-bootstrap intervals of model minus baseline, each on its own: no verdict is drawn "
          "from them (20 such calls at 5% would find something by chance).", "",
          *md_table(["baseline", "metric", "baseline [95% CI]", "model - baseline [95% CI]"],
                    [[name, k, ci_text(bb["metrics"][k]), ci_text(d, "+.3f")]
                     for name, bb in r["baselines"].items() for k, d in bb["difference"].items()]), ""]
    L += [f"- **{name}**: {bb['description']}" for name, bb in r["baselines"].items()]
    L.append("")
    if "backtest" in r:
        bk = r["backtest"]
        s = bk["settings"]
        L += ["## Backtest from prices", "",
              f"{s['start']} .. {s['end']}; {s['timing']}; {s['holds']}; {s['cost_bps_per_side']:g} bps per side; "
              f"shorts pay {s.get('borrow_bps_per_year', 0):g} bps a year to borrow; {s['risk_free']}.", "",
              *md_table(["strategy", "total", "annualised", "Sharpe (net of rf)", "max drawdown", "win rate", "holds",
                         "turnover/yr", "exposure"],
                        [[name, *(_fmt(bk[name][k], f) for k, f in BOOK_COLUMNS[:5]), bk[name]["n_holds"],
                          *(_fmt(bk[name][k], f) for k, f in BOOK_COLUMNS[5:])]
                         for name in ("long_flat", "long_short", "buy_and_hold")])]
        ub = bk.get("upper_bound_same_close")
        if ub:
            L += ["", f"Upper bound, {ub['note']}: long/flat {_fmt(ub['long_flat']['total_return'], '+.1%')}, "
                  f"long/short {_fmt(ub['long_short']['total_return'], '+.1%')}."]
        if r.get("hindsight"):
            L += ["", r["hindsight"]]
        L += ["", "![equity curves](equity.png)", ""]
    L += selection_lines(r.get("selection"))
    L += ["## Training and attention", "", "![learning curves](learning_curves.png)", "",
          "![attention by predicted class](attention_by_class.png)", ""]
    L += markdown_lines(r.get("volatility"))
    L += ["## Interpretation", ""] + [f"- {line}" for line in r["interpretation"]] + [""]
    return "\n".join(L)


def planted_line(report: dict) -> list[str]:
    """A synthetic market's known answer, to read the figures above against (none for real data)."""
    p = report.get("planted")
    if not p:
        return []
    realised = p.get("realised") or {}
    oracle = ", ".join(f"{k} {v:+.4f}" for k, v in realised.items() if isinstance(v, float) and k.startswith("oracle"))
    return [f"known answer (synthetic market, seed {p.get('seed')}): planted {p.get('kind')} at population IC "
            f"{p.get('ic')}" + (f"; realised over the whole history: {oracle}" if oracle else "")]


def summary_lines(report: dict) -> list[str]:
    """A short console summary of a report."""
    if report.get("layout") == "panel":
        return panel_summary_lines(report) + ["  " + line for line in planted_line(report)]
    t, m = report["test"], report["test"]["metrics"]
    ds = report["dataset"]
    lines = [f"{report['model']['name']}/{report['model']['version']} on the test split "
             f"{ds['test'].get('start')}..{ds['test'].get('end')}: {t['n']} windows, "
             f"{_fmt(t['share_up_true'], '.0%')} up (95% block-bootstrap intervals)"]
    if ds.get("leaky"):
        lines.insert(0, "WARNING: leaky 'seed' protocol dataset: not an out-of-sample estimate")
    lines.append("  " + "  ".join(f"{k} {ci_text(m[k])}" for k in ("accuracy", "balanced_accuracy", "f1")))
    lines.append("  " + "  ".join(f"{k} {ci_text(m[k])}" for k in ("auroc", "mcc")))
    if report.get("headline"):
        lines.append("  " + report["headline"]["verdict"])
    for name, b in report["baselines"].items():
        acc = b["difference"]["accuracy"]
        lines.append(f"  vs {name}: accuracy {_fmt(b['metrics']['accuracy']['point'])}, model-baseline "
                     f"{ci_text(acc, '+.3f')} (secondary)")
    if "backtest" in report:
        bk = report["backtest"]
        lines.append("  backtest " + ", ".join(
            f"{k} {_fmt(bk[k]['total_return'], '+.1%')} (Sharpe {_fmt(bk[k]['sharpe'], '.2f')}, "
            f"max DD {_fmt(bk[k]['max_drawdown'], '.1%')})" for k in ("long_flat", "long_short", "buy_and_hold")))
    if report.get("volatility"):
        lines.append("  " + report["volatility"]["verdict"])
    return lines + [_selection_line(report)] + ["  " + line for line in planted_line(report)]


def _selection_line(report: dict) -> str:
    sel = report.get("selection")
    if not sel:
        return "  test results are reported only; they feed no choice"
    return (f"  the test split is the block that chose this model ({sel['chosen_on']['start']} .. "
            f"{sel['chosen_on']['end']}); after it: "
            + (sel["after"].get("none_yet") or f"{sel['after']['days']} days, see the report"))


def panel_summary_lines(report: dict) -> list[str]:
    ds, ic = report["dataset"], report["rank_ic"]
    lines = [f"{report['model']['name']}/{report['model']['version']}, a panel of {len(ds['tickers'])} instruments, on the "
             f"test split {ds['test']['start']}..{ds['test']['end']} ({report['test']['windows']} windows, "
             f"{report['test']['dates']} dates); label: {report.get('label')}"]
    for name, e in ic.items():
        m, d = e["mean"], e.get("model_minus_this")
        lines.append(f"  mean rank IC {name:20s} {ci_text(m, '+.4f')}" + (f"  model - this {ci_text(d, '+.4f')}" if d else ""))
    pooled = report["test"]["pooled"]
    lines.append("  pooled " + "  ".join(f"{k} {ci_text(v)}" for k, v in pooled.items()))
    lines += ["  " + report["verdict"]]
    if report.get("volatility"):
        lines.append("  " + report["volatility"]["verdict"])
    return lines + [_selection_line(report)]
