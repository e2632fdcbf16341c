"""Every figure the README's "What to expect" section quotes comes from a results file that a
named command regenerates, and says what that file says.

``QUOTES`` is the one list of them: the file, the key path inside it, and how the README prints
it. A figure typed into the section without an entry here fails the second test; an entry whose
file has moved on fails the first (rerun the command, then update the README's text).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PANEL = "bench/results/panel.json"  # python bench/panel.py (its walk-forward is the earlier, non-nested one)
NESTED = "bench/results/panel_nested.json"  # python ray_jobs/tune.py --space search_spaces/panel.yaml --record ...
POWER = "bench/results/power_curve.json"  # python bench/power_curve.py
FAMILIES = "bench/results/family_comparison.json"  # python ray_jobs/compare_families.py --record ...
AUDIT = "docs/LEAKAGE_AUDIT.json"  # python ray_jobs/audit_leakage.py
WF = "reports.walk_forward.rank_ic"
VOL = "scores.v2+vol.volatility"
# The power curve's cells the section quotes (20 names / 200 names, 30 years), by position in its grid.
P05_20, P03_20, P02_20, P02_200 = "cells.38", "cells.26", "cells.14", "cells.23"

# (file, key path, format): "ci" prints "+0.031 [+0.011, +0.051]" from {point, low, high}.
QUOTES = [
    (AUDIT, "seed.model.test.accuracy", ".2f"),
    (AUDIT, "clean.model.test.accuracy", ".2f"),
    (AUDIT, "clean.knn_test.accuracy", ".2f"),
    (AUDIT, "seed.knn_test.accuracy", ".2f"),
    (NESTED, "settings.minutes", ".0f"),
    (NESTED, "test.dates", ",d"),
    (NESTED, "rank_ic.model.mean", "ci"),
    (NESTED, "rank_ic.model.share_positive", ".0%"),
    (NESTED, "rank_ic.momentum_12_1.mean", "ci"),
    (NESTED, "rank_ic.logistic_regression.mean", "ci"),
    (NESTED, "rank_ic.gradient_boosting.mean.point", "+.3f"),
    (NESTED, "rank_ic.momentum_12_1.model_minus_this", "ci"),
    (PANEL, f"{WF}.model.mean.point", "+.3f"),
    *[(POWER, f"{cell}.{key}", fmt) for cell in (P05_20, P03_20, P02_20, P02_200)
      for key, fmt in (("ic", "g"), ("power", ".0%"))],
    (FAMILIES, "test_dates", ",d"),
    (FAMILIES, "scores.v2.mean_rank_ic", "ci"),
    (FAMILIES, "scores.momentum_12_1.mean_rank_ic", "ci"),
    (FAMILIES, "scores.simple_rule.mean_rank_ic.point", "+.3f"),
    *[(FAMILIES, f"scores.{n}.mean_rank_ic.point", "+.3f") for n in ("tft", "v2+vol", "tft+vol", "v2-gru")],
    (FAMILIES, "scores.v2+vol.mean_val_ce", ".4f"),
    (FAMILIES, "scores.tft.mean_val_ce", ".4f"),
    (FAMILIES, f"{VOL}.scores.model_r2.point", ".0%"),
    (FAMILIES, f"{VOL}.scores.model_r2", "ci"),
    (FAMILIES, f"{VOL}.scores.baseline_r2.point", ".0%"),
    (FAMILIES, f"{VOL}.scores.r2_model_minus_baseline", "ci"),
    (FAMILIES, f"{VOL}.scores.linear_r2.point", ".1%"),
    (FAMILIES, f"{VOL}.scores.r2_model_minus_linear", "ci"),
    (FAMILIES, f"{VOL}.cross_sectional_rank_corr.model.point", ".2f"),
    (FAMILIES, "scores.tft+vol.volatility.scores.r2_model_minus_linear", "ci"),
]
# Numbers in the section that are not measurements: the reference document's claim, which the
# section quotes in order to refute it, and the intervals' confidence level.
NOT_FIGURES = {"79.5%", "95%"}


def _value(file: str, path: str):
    node = json.loads((ROOT / file).read_text())
    for key in path.split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _printed(value, fmt: str) -> str:
    if fmt == "ci":
        return f"{value['point']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"
    return format(value, fmt)


def _section() -> str:
    text = (ROOT / "README.md").read_text().replace("\u2212", "-")  # the README prints a true minus sign
    start = text.index("## What to expect")
    return re.sub(r"\s+", " ", text[start : text.index("\n## ", start + 1)])


@pytest.mark.parametrize("file,path,fmt", QUOTES, ids=[f"{f.split('/')[-1]}:{p}" for f, p, _ in QUOTES])
def test_the_readme_prints_what_its_results_file_says(file, path, fmt):
    want = _printed(_value(file, path), fmt)
    assert want in _section(), f"README should print {want} ({file}: {path}); rerun its command or fix the text"


def test_every_figure_in_the_section_has_a_source():
    printed = " ".join(_printed(_value(f, p), fmt) for f, p, fmt in QUOTES)
    figures = re.findall(r"[+-]?\d+\.\d+%?|\d+%", _section())
    orphans = [x for x in figures if x not in printed and x not in NOT_FIGURES]
    assert not orphans, f"figures in README's 'What to expect' with no entry in QUOTES: {orphans}"
