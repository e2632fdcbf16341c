"""A short human summary of a built dataset (for the build command and the quickstart)."""

from __future__ import annotations

from pathlib import Path


def describe(meta: dict, out: Path | str, seconds: float | None = None) -> str:
    lines = [
        f"dataset {meta['name']} ({meta['protocol']} protocol{', LEAKY' if meta['leaky'] else ''}) -> {out}",
        f"  windows of {meta['seq_len']} days x {len(meta['features']['selected'])} features "
        f"(from {meta['features']['n_candidates']} candidates, {len(meta['sources'])} sources), "
        f"{meta['horizon']}-day label",
    ]
    for name, s in meta["splits"].items():
        counts = "/".join(str(c) for c in s["class_counts_before_balancing"])
        after = "/".join(str(c) for c in s["class_counts"])
        bal = f", after balancing {after}" if after != counts else ""
        lines.append(
            f"  {name:5s} {s['n']:6d} windows, ends {s['start']}..{s['end']} "
            f"(days {s['window_start']}..{s['label_end']}), classes {counts}{bal}"
        )
    top = ", ".join(meta["features"]["selected"][:8])
    lines.append(f"  top features: {top}, ...")
    sc = meta["scaler"]
    lines.append(f"  scaler fitted on {sc['fit_start']}..{sc['fit_end']}; fingerprint {meta['fingerprint'][:12]}")
    if seconds is not None:
        lines.append(f"  built in {seconds:.1f} s")
    return "\n".join(lines)
