"""Search-space files: distributions keyed by dotted config fields, validated at load time.

    preset: tiny                      # model preset the model.* keys modify
    dataset: ../datasets/msft_v2.yaml # relative to this file
    num_samples: 8
    scheduler: {max_epochs: 10, grace_period: 2, reduction_factor: 3}
    train: {batch_size: 64}           # fixed overrides (not searched), per section
    space:                            # only distributions
      data.seq_len: {choice: [20, 30]}
      model.lstm_hidden: {choice: [16, 32]}
      train.lr: {loguniform: [1.0e-4, 3.0e-3]}
    points_to_evaluate: [{...}]       # evaluated first (Optuna), dotted keys

Every distribution's bounds or choices are checked against the typed configs, so an
unknown key, an impossible range or a value of the wrong type fails here with the file
and key named, not in trial 17 an hour later.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ray import tune

from stocktrend.config_io import ConfigError, config_to_dict, read_yaml, with_overrides
from stocktrend.data.config import DataConfig, load_data_config
from stocktrend.models.config import PRESETS, preset
from stocktrend.training.config import TrainConfig

SECTIONS = ("data", "model", "train")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "quniform", "qrandint")
TOP_KEYS = {"description", "preset", "dataset", "num_samples", "max_concurrent", "scheduler", "space",
            "points_to_evaluate", "seed", "evaluation", *SECTIONS}
EVALUATION_KEYS = {"walk_forward"}  # K > 0: a nested walk-forward, one search per fold (tuning/nested.py)
SCHEDULER_KEYS = {"max_epochs", "grace_period", "reduction_factor"}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    path: Path
    preset: str
    data: DataConfig  # base dataset config (fixed data overrides applied)
    model_fixed: dict[str, Any]
    train: TrainConfig  # base training config (fixed train overrides applied)
    distributions: dict[str, dict[str, Any]]  # dotted key -> {kind: args}
    points_to_evaluate: list[dict[str, Any]]
    num_samples: int = 8
    max_concurrent: int = 2
    max_epochs: int = 10
    grace_period: int = 2
    reduction_factor: int = 3
    seed: int = 0
    walk_forward: int = 0  # folds of the nested walk-forward, a search per fold (0: one search on the split)

    def tune_space(self) -> dict[str, Any]:
        return {k: to_tune(k, d) for k, d in self.distributions.items()}


def to_tune(key: str, dist: dict[str, Any]):
    (kind, args), = dist.items()
    if kind == "choice":
        return tune.choice(list(args))
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    if kind == "randint":  # inclusive upper bound in the file; Tune's is exclusive
        return tune.randint(args[0], args[1] + 1)
    if kind == "quniform":
        return tune.quniform(*args)
    if kind == "qrandint":
        return tune.qrandint(*args)
    raise ValueError(f"{key}: unknown distribution {kind}")


def _values_to_check(src: str, key: str, dist: Any) -> list[Any]:
    """Representative values of a distribution (its choices or bounds), after shape checks."""
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(f"{src}: space.{key}: expected one distribution like {{choice: [...]}}, got {dist!r}")
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{src}: space.{key}: unknown distribution '{kind}'; use one of {DISTRIBUTIONS}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{src}: space.{key}: choice needs a non-empty list")
        return args
    want = 3 if kind.startswith("q") else 2
    if not isinstance(args, list) or len(args) != want or not all(isinstance(a, (int, float)) for a in args):
        raise ConfigError(f"{src}: space.{key}: {kind} needs {want} numbers [low, high{', q' if want == 3 else ''}]")
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"{src}: space.{key}: impossible range: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{src}: space.{key}: loguniform needs low > 0, got {low}")
    if kind in ("randint", "qrandint") and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{src}: space.{key}: {kind} needs integers, got {args}")
    if kind.startswith("q") and (args[2] <= 0 or not math.isclose(round((high - low) / args[2]) * args[2], high - low)):
        raise ConfigError(f"{src}: space.{key}: q={args[2]} must divide high - low")
    return [low, high]


def split_key(src: str, key: str) -> tuple[str, str]:
    section, _, field = key.partition(".")
    if section not in SECTIONS or not field:
        raise ConfigError(f"{src}: space key '{key}' must be data.<field>, model.<field> or train.<field>")
    return section, field


def resolve(space: SearchSpace, values: dict[str, Any]) -> tuple[DataConfig, dict[str, Any], TrainConfig]:
    """Configs of one trial: the base configs with the sampled dotted values applied."""
    by = {s: {} for s in SECTIONS}
    for key, v in values.items():
        section, field = split_key(str(space.path), key)
        by[section][field] = v
    data = with_overrides(space.data, by["data"], f"{space.path} data")
    train = with_overrides(space.train, by["train"], f"{space.path} train")
    return data, {**space.model_fixed, **by["model"]}, train


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path).resolve()
    src = str(path)
    raw = read_yaml(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{src}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    name = raw.get("preset", "tiny")
    if name not in PRESETS:
        raise ConfigError(f"{src}: preset '{name}' is not one of {sorted(PRESETS)}")
    evaluation = raw.get("evaluation") or {}
    if set(evaluation) - EVALUATION_KEYS:
        raise ConfigError(f"{src}: unknown evaluation key(s) {sorted(set(evaluation) - EVALUATION_KEYS)}; "
                          f"allowed: {sorted(EVALUATION_KEYS)}")
    sched = raw.get("scheduler", {}) or {}
    if set(sched) - SCHEDULER_KEYS:
        raise ConfigError(f"{src}: unknown scheduler key(s) {sorted(set(sched) - SCHEDULER_KEYS)}")
    dataset = Path(raw.get("dataset", "../datasets/msft_v2.yaml"))
    dataset = dataset if dataset.is_absolute() else (path.parent / dataset).resolve()

    dists = raw.get("space") or {}
    if not isinstance(dists, dict) or not dists:
        raise ConfigError(f"{src}: 'space' must map dotted config keys to distributions")
    try:
        data = load_data_config(dataset, **(raw.get("data") or {}))
    except ConfigError as err:
        raise ConfigError(f"{src}: data: {err}") from None
    train = with_overrides(TrainConfig(), raw.get("train") or {}, f"{src} train")
    model_fixed = dict(raw.get("model") or {})
    preset(name, **model_fixed)  # fixed model overrides must be valid on their own

    # Every trial is validated on the same end dates: the purge gap is sized for the
    # longest window and horizon the space can draw.
    seq, hor = data.seq_len, data.horizon
    if "data.seq_len" in dists:
        seq = max(seq, *_values_to_check(src, "data.seq_len", dists["data.seq_len"]))
    if "data.horizon" in dists:
        hor = max(hor, *_values_to_check(src, "data.horizon", dists["data.horizon"]))
    if data.split.purge_rows == "auto" or data.split.purge_rows < seq + hor - 1:
        data = with_overrides(data, {"split": {**config_to_dict(data.split), "purge_rows": int(seq + hor - 1)}})

    for key, dist in dists.items():
        section, field = split_key(src, key)
        for value in _values_to_check(src, key, dist):
            try:
                if section == "data":
                    with_overrides(data, {field: value}, f"{src}: space.{key}")
                elif section == "train":
                    with_overrides(train, {field: value}, f"{src}: space.{key}")
                else:
                    preset(name, **{**model_fixed, field: value})
            except (ConfigError, ValueError) as err:
                msg = str(err).split("\n")[0].split("Value error, ")[-1].split(" (got ArgsKwargs")[0]
                raise ConfigError(f"{src}: space.{key}: value {value!r} is not valid: {msg}") from None

    points = raw.get("points_to_evaluate") or []
    for i, point in enumerate(points):
        missing = set(dists) - set(point)
        if set(point) - set(dists) or missing:
            raise ConfigError(f"{src}: points_to_evaluate[{i}] must give exactly the space's keys (missing {sorted(missing)})")
    return SearchSpace(
        path=path, preset=name, data=data, model_fixed=model_fixed, train=train, distributions=dists,
        points_to_evaluate=points, num_samples=int(raw.get("num_samples", 8)),
        max_concurrent=int(raw.get("max_concurrent", 2)), max_epochs=int(sched.get("max_epochs", 10)),
        grace_period=int(sched.get("grace_period", 2)), reduction_factor=int(sched.get("reduction_factor", 3)),
        seed=int(raw.get("seed", 0)), walk_forward=int(evaluation.get("walk_forward", 0)),
    )
