"""Why does the network miss a temporal plant that a linear model over the window finds?

    python bench/temporal_probe.py [--ic 0.07] [--epochs 4]   ->  bench/results/temporal_probe.json

One synthetic market with the temporal plant (``stocktrend.data.synthetic``: an ordering of
daily moves 10 to 16 days back that no last-day feature holds), built by the real dataset
builder. The same plain training loop (AdamW, cross-entropy, batch 256, clip 1.0, no
schedule, no selection: the last epoch is scored) fits learners of growing structure on the
training windows, each on all the selected features and on the three daily-return features
alone (own, cross-sectional z-score and rank), and scores the test split's mean daily rank IC
against the oracle's. A learner that fails with three inputs fails for its structure or its
optimisation, not for the features' noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

from stocktrend.data.store import atomic_write_text, read_metadata  # noqa: E402
from stocktrend.data.synthetic import MarketSpec, planted_score  # noqa: E402
from stocktrend.data.windows import split_arrays  # noqa: E402
from stocktrend.evaluation.known_answers import market_dataset  # noqa: E402
from stocktrend.evaluation.panel_metrics import rank_ic_by_date  # noqa: E402
from stocktrend.models.config import model_config_from_metadata  # noqa: E402
from stocktrend.models.network import build_network  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "temporal_probe.json"
DAILY = ("own_ret_1", "xs_z_ret_1", "xs_rank_ret_1")


class LastStateLSTM(nn.Module):
    """A one-layer LSTM read at the window's last step: the plainest recurrent learner."""

    def __init__(self, n_features: int, hidden: int = 16):
        super().__init__()
        self.lstm, self.out = nn.LSTM(n_features, hidden, batch_first=True), nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x)[0][:, -1])


def learners(meta: dict, n_features: int, seq_len: int) -> dict:
    return {
        "linear over the window (flattened)": lambda: nn.Sequential(nn.Flatten(), nn.Linear(seq_len * n_features, 2)),
        "LSTM(16), last state": lambda: LastStateLSTM(n_features),
        "TrendNet tiny, no window readout (the reference network)": lambda: build_network(
            model_config_from_metadata("tiny", meta, n_features=n_features, window_readout=0)),
        "TrendNet tiny (window readout over the window)": lambda: build_network(
            model_config_from_metadata("tiny", meta, n_features=n_features, window_readout=seq_len)),
    }


def fit_score(make, x, y, xt, score, epochs: int, lr: float) -> dict:
    torch.manual_seed(0)
    net, start = make(), time.perf_counter()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-3)
    for _ in range(epochs):
        net.train()
        for b in torch.randperm(len(x)).split(256):
            loss = nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    net.eval()
    with torch.no_grad():
        p_up = torch.cat([net(xt[s:s + 4096]).softmax(-1)[:, 1] for s in range(0, len(xt), 4096)]).numpy()
    return {"test_rank_ic": score(p_up), "parameters": sum(p.numel() for p in net.parameters()),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ic", type=float, default=0.07)
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--years", type=float, default=15)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    spec = MarketSpec(instruments=args.instruments, days=int(args.years * 252), plant="temporal", ic=args.ic, seed=0)
    with tempfile.TemporaryDirectory(prefix="temporal-") as tmp:
        dataset, realised = market_dataset(spec, Path(tmp))
        meta = read_metadata(dataset)
        tr, te = split_arrays(dataset, "train", mmap=False), split_arrays(dataset, "test", mmap=False)
        fwd = np.load(dataset / "forward_returns.npy")
        inst, rows = te["index"][:, 0], te["index"][:, 1]
        ret = fwd[inst, rows]
        oracle = planted_score(np.log(np.load(dataset / "close.npy")).T, "temporal")[rows, inst]

    def score(s: np.ndarray) -> float:
        return float(rank_ic_by_date(te["dates"], s, ret).mean())

    feats = meta["features"]["selected"]
    subsets = {"all selected features": list(range(len(feats))),
               "three daily-return features": [feats.index(f) for f in DAILY if f in feats]}
    y = torch.from_numpy(tr["y"].argmax(1))
    rows_out = []
    for subset, keep in subsets.items():
        x = torch.from_numpy(np.asarray(tr["X"], np.float32)[:, :, keep])
        xt = torch.from_numpy(np.asarray(te["X"], np.float32)[:, :, keep])
        last = LogisticRegression(C=1.0, max_iter=2000).fit(x[:, -1].numpy(), y.numpy())
        rows_out.append({"features": subset, "learner": "logistic, last day only (sklearn)",
                         "test_rank_ic": score(last.predict_proba(xt[:, -1].numpy())[:, 1])})
        for name, make in learners(meta, len(keep), x.shape[1]).items():
            lr = 3e-4 if name.startswith("linear") else 1e-3
            rows_out.append({"features": subset, "learner": name, "lr": lr,
                             **fit_score(make, x, y, xt, score, args.epochs, lr)})
            print(json.dumps(rows_out[-1]), flush=True)
    result = {"machine": machine_info(), "market": {**spec.__dict__, "realised": realised},
              "train_windows": int(len(y)), "epochs": args.epochs, "oracle_test_rank_ic": score(oracle),
              "rows": rows_out}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
