"""python -m stocktrend.models: print a preset's parameter count per block.

Example: python -m stocktrend.models --preset v1 --n-features 224 --seq-len 120 --n-classes 5
"""

from __future__ import annotations

import argparse
import json
import sys

from stocktrend.config_io import ConfigError
from stocktrend.models.config import PRESETS, model_config_from_metadata, preset
from stocktrend.models.network import build_network, parameter_counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stocktrend.models",
        description="Build a network (TrendNet, or the TFT-style family) from a preset and print its parameters per block.",
    )
    p.add_argument("--preset", default="v2", choices=sorted(PRESETS), help="model preset (default v2)")
    p.add_argument("--metadata", help="a dataset's metadata.json: takes n_features/seq_len/n_classes from it")
    p.add_argument("--n-features", type=int, help="input features per time step")
    p.add_argument("--seq-len", type=int, help="window length in time steps")
    p.add_argument("--n-classes", type=int, help="number of classes")
    p.add_argument("--transformer-ff", type=int, help="override the transformer feed-forward width")
    p.add_argument("--rnn", choices=["lstm", "gru"], help="the recurrent block (default: the preset's LSTM)")
    p.add_argument("--window-readout", type=int,
                   help="steps the linear readout reads (default: the preset's; 0: the reference network)")
    args = p.parse_args(argv)

    overrides = {
        k: v
        for k, v in dict(
            n_features=args.n_features, seq_len=args.seq_len,
            n_classes=args.n_classes, transformer_ff=args.transformer_ff, rnn=args.rnn,
            window_readout=args.window_readout,
        ).items()
        if v is not None
    }
    try:
        if args.metadata:
            with open(args.metadata) as f:
                cfg = model_config_from_metadata(args.preset, json.load(f), **overrides)
        else:
            cfg = preset(args.preset, **overrides)
    except (ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    counts = parameter_counts(build_network(cfg))
    print(f"preset {args.preset}: n_features={cfg.n_features} seq_len={cfg.seq_len} n_classes={cfg.n_classes}")
    print(f"{'block':<12}{'parameters':>14}")
    for block, n in counts.items():
        if block == "total":
            print("-" * 26)
        print(f"{block:<12}{n:>14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
