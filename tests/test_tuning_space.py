"""Search-space files: every shipped file loads; bad ones are refused naming file and key."""

from __future__ import annotations

import itertools

import pytest
import yaml

from stocktrend.config_io import ConfigError
from stocktrend.tuning.space import _values_to_check, load_space, resolve

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("name", ["smoke", "quick", "v2", "panel", "panel_rank"])
def test_every_shipped_space_loads_and_every_drawable_window_is_purged(repo_root, name):
    space = load_space(repo_root / "search_spaces" / f"{name}.yaml")
    assert space.tune_space()
    # Every value a data key can take (its choices or bounds), not only the points to
    # evaluate (smoke and quick have none): each trial's purge covers its own window.
    data_keys = {k: _values_to_check(str(space.path), k, d) for k, d in space.distributions.items() if k.startswith("data.")}
    assert data_keys, "each shipped space searches a data field"
    draws = [dict(zip(data_keys, combo)) for combo in itertools.product(*data_keys.values())]
    purges = set()
    for values in [*draws, *space.points_to_evaluate]:
        data, _, _ = resolve(space, {k: v for k, v in values.items() if k.startswith("data.")})
        assert data.split.purge_rows >= data.seq_len + data.horizon - 1, values
        purges.add(data.split.purge_rows)
    assert len(purges) == 1  # one purge for the whole search: every trial validates on the same dates


def test_v2_space_evaluates_the_reference_configuration_first(repo_root):
    space = load_space(repo_root / "search_spaces" / "v2.yaml")
    data, model, train = resolve(space, space.points_to_evaluate[0])
    from stocktrend.models.config import preset

    assert preset("v2", **model) == preset("v2", window_readout=0)  # the reference document's network
    assert (train.lr, train.weight_decay, train.max_lr, train.batch_size) == (2e-4, 5e-3, 1e-3, 16)
    assert (data.seq_len, data.n_features) == (30, 50)


def test_purge_gap_covers_the_longest_window_in_the_space(repo_root):
    space = load_space(repo_root / "search_spaces" / "v2.yaml")
    assert space.data.split.purge_rows == 60 + 5 - 1  # seq_len up to 60, horizon 5


BASE = {"preset": "tiny", "dataset": "DATASET", "space": {"train.lr": {"loguniform": [1e-4, 1e-3]}}}


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"colour": 1}, "unknown key(s) ['colour']"),
        ({"space": {"model.lstm_hiden": {"choice": [8]}}}, "space.model.lstm_hiden"),
        ({"space": {"optim.lr": {"choice": [1]}}}, "space key 'optim.lr'"),
        ({"space": {"train.lr": {"uniform": [1e-3, 1e-4]}}}, "impossible range"),
        ({"space": {"train.lr": {"loguniform": [0, 1e-3]}}}, "loguniform needs low > 0"),
        ({"space": {"model.lstm_hidden": {"choice": ["big"]}}}, "space.model.lstm_hidden: value 'big'"),
        ({"space": {"data.seq_len": {"randint": [5.5, 9]}}}, "randint needs integers"),
        ({"space": {"train.lr": {"gaussian": [0, 1]}}}, "unknown distribution 'gaussian'"),
        ({"space": {"model.cnn_kernel": {"choice": [3, 4]}}}, "value 4 is not valid"),
        ({"preset": "huge"}, "preset 'huge'"),
        ({"points_to_evaluate": [{"train.lr": 1e-4, "train.wd": 1}]}, "points_to_evaluate[0]"),
        ({"scheduler": {"max_epoch": 3}}, "unknown scheduler key"),
    ],
)
def test_bad_space_files_are_refused(tmp_path, repo_root, change, needle):
    conf = {**BASE, "dataset": str(repo_root / "datasets" / "msft_v2.yaml"), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(conf))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert needle in str(info.value) and str(path) in str(info.value), str(info.value)
