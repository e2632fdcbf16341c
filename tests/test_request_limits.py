"""A request's cost is bounded before work is done on it (serving/wire.py, inference/rows.py,
serving/featurise.py), without a cluster: the over-HTTP cases are in test_serve.py and the
reliability suite."""

from __future__ import annotations

import asyncio
import io
import struct
import time

import numpy as np
import orjson
import pandas as pd
import pytest

from stocktrend.data.config import SourceConfig
from stocktrend.data.errors import DataError
from stocktrend.data.sources import parse_table
from stocktrend.inference.predictor import InputError
from stocktrend.inference.rows import frame_from_rows, rows_allowed
from stocktrend.serving import wire
from stocktrend.serving.featurise import Featuriser
from stocktrend.serving.wire import ApiError


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npy_with_header(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file written by hand: the header may declare anything."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text + data


def test_a_npy_header_declaring_a_huge_shape_is_refused_without_allocating_it():
    body = npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }")
    assert len(body) < 200
    t0 = time.perf_counter()
    with pytest.raises(ApiError) as err:
        wire.windows_from_npy(body, 64)
    assert time.perf_counter() - t0 < 0.5
    assert err.value.status == 422 and "3-D" in err.value.message
    body = npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (10, 100000, 100000), }")
    with pytest.raises(ApiError) as err:
        wire.windows_from_npy(body, 64)
    assert err.value.status == 400 and "but 0 bytes follow it" in err.value.message


@pytest.mark.parametrize("header, status, words", [
    ("{'descr': '|O', 'fortran_order': False, 'shape': (1, 2, 3), }", 422, "float32 or float64"),
    ("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2, 3), }", 422, "float32 or float64"),
    ("{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2, 3), }", 422, "float32 or float64"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (100, 2, 3), }", 413, "100 windows"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3)", 400, "not a .npy array"),
    ("not a dict at all", 400, "not a .npy array"),
])
def test_npy_headers_are_checked_before_the_data(header, status, words):
    with pytest.raises(ApiError) as err:
        wire.windows_from_npy(npy_with_header(header, b"\0" * 24), 64)
    assert err.value.status == status and words in err.value.message


def test_a_npy_of_another_format_version_or_truncated_data_is_refused():
    x = np.random.default_rng(0).standard_normal((3, 5, 4))
    with pytest.raises(ApiError, match="format version 3.0"):
        wire.windows_from_npy(npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 5, 4), }",
                                              x.tobytes(), version=(3, 0)), 64)
    with pytest.raises(ApiError, match="480 bytes of data"):
        wire.windows_from_npy(npy(x)[:-8], 64)


@pytest.mark.parametrize("arr", [
    np.random.default_rng(1).standard_normal((3, 5, 4)),
    np.random.default_rng(2).standard_normal((2, 5, 4)).astype(np.float32),
    np.asfortranarray(np.random.default_rng(3).standard_normal((2, 5, 4))),
    np.random.default_rng(4).standard_normal((2, 5, 4)).astype(">f8"),
])
def test_a_valid_npy_reads_as_numpy_reads_it(arr):
    got = wire.windows_from_npy(npy(arr), 64)
    np.testing.assert_array_equal(got, np.load(io.BytesIO(npy(arr))).astype(np.float32))
    assert got.dtype == np.float32 and got.flags.writeable


def test_the_window_count_is_checked_on_the_json_first_level():
    with pytest.raises(ApiError) as err:
        wire.windows_from_json([[[0.0]]] * 65, b"", 64)
    assert err.value.status == 413 and "65 windows" in err.value.message


def test_the_derived_body_limit_admits_the_largest_valid_request_and_little_more():
    n, seq_len, feats = 64, 30, 50
    worst = np.full((n, seq_len, feats), -1.2345678901234567e-300)  # the longest float64 text
    for body in (orjson.dumps({"windows": worst.tolist()}), npy(worst)):
        kind = wire.NPY_MEDIA_TYPE if body.startswith(b"\x93NUMPY") else wire.JSON_MEDIA_TYPE
        limit = wire.windows_body_limit(kind, n, seq_len, feats, 10**9)
        assert len(body) <= limit < 1.2 * len(body) + 8192
    assert wire.windows_body_limit(wire.JSON_MEDIA_TYPE, n, seq_len, feats, 4096) == 4096


class StreamedRequest:
    """What read_body uses of a Starlette request: headers and the body as a stream."""

    def __init__(self, chunks: list[bytes], length: int | None = None):
        self.headers = {} if length is None else {"content-length": str(length)}
        self.chunks, self.read = chunks, 0

    async def stream(self):
        for chunk in self.chunks:
            self.read += 1
            yield chunk


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap():
    request = StreamedRequest([b"x" * 1000] * 100)  # 100 KB in chunks, no Content-Length
    with pytest.raises(ApiError) as err:
        asyncio.run(wire.read_body(request, 5000))
    assert err.value.status == 413 and request.read == 6  # the rest never read
    declared = StreamedRequest([b"x"], length=10**9)
    with pytest.raises(ApiError, match="1000000000 bytes"):
        asyncio.run(wire.read_body(declared, 5000))
    assert declared.read == 0
    assert asyncio.run(wire.read_body(StreamedRequest([b"ab", b"cd"]), 4)) == b"abcd"


# -- bars rows ------------------------------------------------------------------------------
ROWS = [{"Date": f"2017-01-{d:02d}", "Close": 10.0 + d} for d in range(1, 11)]


def test_rows_with_keys_of_their_own_are_refused_before_a_frame_is_built():
    distinct = [{"Date": "2017-01-02", "Close": 1.0, f"k{i}": 1} for i in range(2000)]
    t0 = time.perf_counter()
    with pytest.raises(InputError) as err:
        frame_from_rows(distinct, "bars.msft", 5000)
    assert time.perf_counter() - t0 < 0.5
    assert err.value.field == "bars.msft[1]" and "has column 'k1' that row 0 does not" in str(err.value)
    with pytest.raises(InputError, match="lacks column 'Close'"):
        frame_from_rows([ROWS[0], {"Date": "2017-01-03"}], "bars.msft", 10)


@pytest.mark.parametrize("rows, field, words", [
    (ROWS * 3, "bars.msft", "30 rows; at most 20"),
    ([{"Date": "2017-01-02", "Close": [1]}], "bars.msft[0].Close", "got list"),
    ([{"Date": "2017-01-02", "Close": {"a": 1}}], "bars.msft[0].Close", "got dict"),
    ([{"Date": "2017-01-02", "Close": True}], "bars.msft[0].Close", "got bool"),
    ([ROWS[0], 5], "bars.msft[1]", "must be an object"),
    ([], "bars.msft", "non-empty list"),
    ({"Date": 1}, "bars.msft", "non-empty list"),
])
def test_bad_rows_name_the_row_and_column(rows, field, words):
    with pytest.raises(InputError) as err:
        frame_from_rows(rows, "bars.msft", 20)
    assert err.value.field == field and words in str(err.value)


def test_columns_the_source_file_did_not_have_are_refused_when_it_recorded_them():
    with pytest.raises(InputError) as err:
        frame_from_rows([{**ROWS[0], "Clsoe": 1}], "bars.msft", 20, known=["Date", "Close", "Volume"])
    assert err.value.field == "bars.msft[0].Clsoe" and "unknown column" in str(err.value)
    frame = frame_from_rows(ROWS, "bars.msft", 20, known=["Date", "Close", "Volume"])
    assert list(frame.columns) == ["Date", "Close"] and len(frame) == 10
    assert rows_allowed(780) == 1810


def test_dates_with_mixed_utc_offsets_and_values_no_market_produces_are_data_errors():
    spec = SourceConfig(path="<request>", kind="ohlcv", columns={"date": "Date", "close": "Close", "volume": "Volume"})

    def table(**change):
        rows = [{"Date": f"2017-01-{d:02d}T00:00:00+00:00", "Close": 10.0, "Volume": 100} for d in range(2, 6)]
        for key, value in change.items():
            rows[2][key] = value
        return pd.DataFrame(rows)

    assert len(parse_table(spec, table(), "bars.msft")) == 4
    with pytest.raises(DataError, match="column 'Date': cannot read the dates as one calendar"):
        parse_table(spec, table(Date="2017-01-04T00:00:00+05:00"), "bars.msft")
    with pytest.raises(DataError, match="column 'Close', line 4: 1e\\+300 is beyond any market's values"):
        parse_table(spec, table(Close=1e300), "bars.msft")
    with pytest.raises(DataError, match="column 'Volume', line 4: volume cannot be negative"):
        parse_table(spec, table(Volume=-5), "bars.msft")


# -- featurisation ----------------------------------------------------------------------------
class SlowPredictor:
    def __init__(self, seconds: float = 0.0, fail: Exception | None = None):
        self.seconds, self.fail = seconds, fail

    def windows_from_bars(self, bars, last, ticker):
        time.sleep(self.seconds)
        if self.fail is not None:
            raise self.fail
        return np.zeros((1, 2, 3), np.float32), ["2017-01-02"]


def test_featurisation_is_cut_off_bounded_and_its_errors_are_4xx():
    async def scenario():
        f = Featuriser(workers=1, timeout_s=0.3, max_pending=2)
        t0 = time.perf_counter()
        with pytest.raises(ApiError) as slow:
            await f(SlowPredictor(1.0), {}, None)
        assert slow.value.status == 503 and time.perf_counter() - t0 < 0.5
        assert f.pending == 1  # the overrunning thread still counts until it ends
        queued = asyncio.ensure_future(f(SlowPredictor(), {}, None))
        await asyncio.sleep(0)
        with pytest.raises(ApiError, match="2 bars requests are being featurised"):  # refused at once
            await f(SlowPredictor(), {}, None)
        with pytest.raises(ApiError):  # queued behind the overrunning thread past its own limit
            await queued
        while f.pending:
            await asyncio.sleep(0.05)
        windows, dates = await f(SlowPredictor(), {}, None)
        assert windows.shape == (1, 2, 3) and dates == ["2017-01-02"]
        with pytest.raises(InputError) as err:
            await f(SlowPredictor(fail=ValueError("Mixed timezones detected")), {}, None)
        assert err.value.field == "bars" and "Mixed timezones" in str(err.value)

    asyncio.run(scenario())


def test_a_deployment_off_loopback_refuses_to_start_without_a_key():
    from stocktrend.serving.access import KeyRequired, check_key_policy

    check_key_policy(None, None, "STOCKTREND_API_KEY", "127.0.0.1")  # loopback: open by default
    check_key_policy(None, "k", "STOCKTREND_API_KEY", "0.0.0.0")
    check_key_policy(False, None, "STOCKTREND_API_KEY", "0.0.0.0")  # switched off, knowingly
    for require, host in ((None, "0.0.0.0"), (None, None), (True, "127.0.0.1")):
        with pytest.raises(KeyRequired, match="require_api_key.*STOCKTREND_API_KEY is not set"):
            check_key_policy(require, None, "STOCKTREND_API_KEY", host)
