"""Known answers: does the pipeline find a signal when one is there, and nothing when none is?

Synthetic markets (``stocktrend.data.synthetic``) go the way a user's files go: written as a
close panel, read by the real readers, built by the real dataset builder, the network trained by
the training module (plain Lightning, the module Ray Train runs) with the default recipe, and
scored by the panel report's own code (``test_table``: the model beside pooled logistic
regression and gradient boosting; the headline is the mean daily rank IC with the report's
interval; ``evaluation.known_answers``). A learner that is broken fails them: shown with the labels shuffled and with a
network that was never trained.

The planted signals are strong (population IC 0.2) so that a few short epochs find them: these
tests are about the pipeline working end to end, not about how weak a signal it can find
(``bench/power_curve.py`` and ``bench/recipe_comparison.py`` measure that). Two kinds: a linear
plant, which the pooled logistic regression on the last day's features finds too; and a temporal
plant (an ordering of daily moves 10 to 16 days back, which no last-day feature holds), which the
network must find through its window and find better than those baselines, by a paired interval.

Broken learners are shown on the temporal plant. On the linear one, the selected features carry
the plant (they were chosen for it), so any function of them, even a network that never saw a
label, correlates with it by chance, its sign at random: in ``bench/known_answers.py`` a network
trained on shuffled labels reached half the oracle there on 1 of 8 seeds, and never on the temporal
plant, which no day's feature holds.

A single instrument's headline is AUROC against 0.5 (rank IC is undefined): its temporal plant,
written as Yahoo-layout OHLCV files, goes through the same builder and training, scored by the
single-stock report's interval.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stocktrend.data.store import read_metadata
from stocktrend.data.synthetic import MarketSpec
from stocktrend.data.windows import split_arrays
from stocktrend.evaluation.bootstrap import Interval
from stocktrend.evaluation.known_answers import found, headline, market_dataset, single_headline, trained_p_up
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training.config import recipe
from stocktrend.training.module import TrendClassifier

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PLANTED = MarketSpec(instruments=30, days=1200, plant="linear", ic=0.2, churn=0.1, seed=0)
NULL = MarketSpec(instruments=30, days=1200, churn=0.1, seed=0)
TEMPORAL = MarketSpec(instruments=30, days=1200, plant="temporal", ic=0.2, churn=0.1, seed=0)
SHAPE = {"seq_len": 10, "n_features": 8}  # small windows: two epochs in seconds
TEMPORAL_SHAPE = {"seq_len": 20, "n_features": 8}  # the window must reach 16 days back
RECIPE = recipe("default", max_epochs=2, batch_size=64, accumulate_grad_batches=1, seed=0)
TEMPORAL_RECIPE = recipe("default", max_epochs=3, batch_size=64, accumulate_grad_batches=1, seed=0)
BASELINES = ("logistic_regression", "gradient_boosting")
# One instrument: 32 years (a single series holds far fewer windows than a panel) and a quarter of
# them tested, so that the AUROC interval is about +-0.03; the plant at 0.3 (oracle AUROC ~0.68).
SINGLE = MarketSpec(instruments=1, days=8000, target="single", plant="temporal", ic=0.3, churn=0.0, seed=0)
SINGLE_DATA = {**TEMPORAL_SHAPE, "split": {"train": 0.6, "val": 0.15, "test": 0.25, "purge_rows": "auto"}}
SINGLE_RECIPE = recipe("default", max_epochs=6, batch_size=64, accumulate_grad_batches=1, seed=0)


def trained_on(root: Path, spec: MarketSpec, shape: dict, train_cfg) -> tuple[Path, dict, dict[str, Interval]]:
    """(dataset, the market's realised strength, the headline of the network trained on it)."""
    dataset, realised = market_dataset(spec, root, **shape)
    return dataset, realised, headline(dataset, trained_p_up(dataset, train_cfg, root / "run"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict, dict[str, Interval]]:
    return trained_on(tmp_path_factory.mktemp("planted"), PLANTED, SHAPE, RECIPE)


def test_the_network_and_the_logistic_baseline_find_a_planted_signal(planted):
    _, realised, ics = planted
    oracle = realised["oracle_rank_ic"]
    assert 0.15 < oracle < 0.3, realised
    assert found(ics["model"], oracle), (ics["model"], oracle)
    assert found(ics["logistic_regression"], oracle), (ics["logistic_regression"], oracle)


def test_whole_cross_sections_with_the_rank_loss_find_the_temporal_plant(temporal, tmp_path):
    """Date batches (each a date's cross-section) with the rank-IC term beside cross-entropy, on
    the plant no last-day feature holds (by hand: +0.20 against the oracle's +0.22)."""
    dataset, realised, _ = temporal
    cfg = recipe("default", max_epochs=3, batch_size=64, accumulate_grad_batches=1, seed=0, batches="dates",
                 rank_weight=1.0)
    ics = headline(dataset, trained_p_up(dataset, cfg, tmp_path / "run"))
    assert found(ics["model"], realised["oracle_rank_ic"]), (ics["model"], realised["oracle_rank_ic"])


def shuffle_labels(dataset: Path, seed: int = 0) -> None:
    """Permute the training and the validation labels in place: the learner sees no label that
    belongs to its window. (Validation labels count too: checkpoint selection on real validation labels is
    learning too, and with it a network trained on shuffled labels still picked, of its epochs'
    arbitrary functions, the one that agreed with the plant: bench/known_answers.py.)"""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        y = np.load(dataset / f"{split}_y.npy")
        np.save(dataset / f"{split}_y.npy", y[rng.permutation(len(y))])


def shuffled_labels(dataset: Path, to: Path) -> Path:
    """A copy of ``dataset`` with its labels shuffled (``shuffle_labels``): nothing left to learn."""
    shutil.copytree(dataset, to)
    shuffle_labels(to)
    return to


def untrained_p_up(dataset: Path, train_cfg) -> np.ndarray:
    """P(up) of a network that was never trained (frozen at its initial weights)."""
    module = TrendClassifier(model_config_from_metadata("tiny", read_metadata(dataset)), train_cfg, [1, 1]).eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(split_arrays(dataset, "test")["X"]))
        return module.model(x).softmax(-1)[:, 1].numpy()


@pytest.fixture(scope="module")
def temporal(tmp_path_factory) -> tuple[Path, dict, dict[str, Interval]]:
    return trained_on(tmp_path_factory.mktemp("temporal"), TEMPORAL, TEMPORAL_SHAPE, TEMPORAL_RECIPE)


def test_the_network_finds_a_temporal_plant_and_beats_the_last_day_baselines_on_it(temporal):
    _, realised, ics = temporal
    oracle = realised["oracle_rank_ic"]
    assert 0.15 < oracle < 0.3, realised
    assert found(ics["model"], oracle), (ics["model"], oracle)
    for name in BASELINES:
        assert ics[f"model - {name}"].low > 0, (name, ics[f"model - {name}"], ics[name])


def test_a_broken_learner_finds_nothing_on_the_temporal_market(temporal, tmp_path):
    dataset, realised, _ = temporal
    oracle = realised["oracle_rank_ic"]
    shuffled = shuffled_labels(dataset, tmp_path / "shuffled")
    assert not found(headline(shuffled, trained_p_up(shuffled, TEMPORAL_RECIPE, tmp_path / "run"))["model"], oracle)
    assert not found(headline(dataset, untrained_p_up(dataset, TEMPORAL_RECIPE))["model"], oracle)


def test_on_a_null_market_every_headline_interval_contains_zero(tmp_path):
    dataset, realised = market_dataset(NULL, tmp_path, **SHAPE)
    assert realised["kind"] == "null"
    ics = headline(dataset, trained_p_up(dataset, RECIPE, tmp_path / "run"))
    for name in ("model", *BASELINES):
        assert ics[name].contains(0.0), (name, ics[name])


def test_a_single_instrument_plant_is_found_by_auroc_and_missed_by_a_broken_learner(tmp_path):
    dataset, realised = market_dataset(SINGLE, tmp_path / "single", layout="yahoo", **SINGLE_DATA)
    oracle = realised["oracle_auroc"]
    assert realised["kind"] == "single" and 0.62 < oracle < 0.75, realised
    auroc = single_headline(dataset, trained_p_up(dataset, SINGLE_RECIPE, tmp_path / "run"))
    assert found(auroc, oracle, chance=0.5), (auroc, oracle)
    shuffled = shuffled_labels(dataset, tmp_path / "shuffled")
    assert not found(single_headline(shuffled, trained_p_up(shuffled, SINGLE_RECIPE, tmp_path / "run2")), oracle, 0.5)
    assert not found(single_headline(dataset, untrained_p_up(dataset, SINGLE_RECIPE)), oracle, 0.5)
