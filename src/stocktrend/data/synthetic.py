"""A synthetic market with known answers: daily prices from a factor model calibrated on the
shipped 20-stock panel, with an optional signal of chosen strength planted in them.

    from stocktrend.data.synthetic import MarketSpec, generate
    from stocktrend.data.synthetic_files import write_market
    market = generate(MarketSpec(instruments=50, days=3780, plant="temporal", ic=0.05, seed=0))
    write_market(market, "datasets/synthetic/temporal_050", layouts=("close_panel", "yahoo", "long"))

Returns: r[i, t] = mu + beta_i (m_t - mu) + g[group(i), t] + s_i sqrt(h_t / E h) e[i, t] (+ the
plant), every name drifting at the market's mean mu (no cross-sectional premium a null market
would hide), with
the market m a GARCH(1,1) with Student-t innovations (volatility clustering, fat tails), a few
correlated groups g, idiosyncratic volatilities s_i spread as the real stocks' are, and every
figure of the model estimated from ``datasets/crude-datasets/stocks20_close.csv`` and the
S&P 500 beside it (``calibrate``; the figures travel in the market's metadata).

Planted signals (``plant``), each a score of instrument i on day t computed from its log
closes up to day t only (``planted_score``; a test checks it), standardised across the
instruments listed that day (a panel) or over time (``target="single"``: one instrument's
direction), and added to the next ``horizon`` days' returns, so that the score's correlation
with the h-day forward return is ``ic`` in population:

- ``null``: nothing; every learner should find nothing.
- ``linear``: the 5-day reversal, minus the 5-day log return: a quantity the day-t features
  expose directly (``<p>_ret_5``), which a pooled logistic regression can fit.
- ``temporal``: a change of pace inside the window: +r[t-10] - r[t-11] - r[t-15] + r[t-16]
  (r[t-k]: the move into day t-k), which no day-t feature holds: every n-day return the
  features carry (n = 1, 2, 3, 5, 10, 20, ...) sums none or all of its weights, and so do
  moving-average gaps, whose ramp weights it is also orthogonal to. A sequence model sees it
  in the daily moves of its window; a last-day model should not. Planted so that the label
  carries only it: each day s adds c times the standardised second difference
  r[s-14] - 2 r[s-15] + r[s-16] to day s+1 alone, and the h = 5 such moves inside
  day t's forward return sum to the score above (the linear plant's moves spread over the
  next h days instead, so its label also holds the neighbouring days' scores). A planted move
  is in units of the market's volatility on its day (a panel's) or of the instrument's own
  (a single instrument's), so its strength does not drift with the volatility regime.

The realised strength (the oracle's mean daily rank IC, or AUROC for a single instrument) is
measured on the generated prices and recorded beside the target. Instruments list and delist
during the history (``churn``). Context series (an index, a Treasury-style curve, oil) are
synthetic too, so a history is not cut where the shipped curve ends.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
PANEL_CSV = ROOT / "datasets" / "crude-datasets" / "stocks20_close.csv"
INDEX_CSV = ROOT / "datasets" / "crude-datasets" / "sp500_close.csv"
PLANTS = ("null", "linear", "temporal")
LAYOUTS = ("close_panel", "yahoo", "long", "parquet", "partitioned")
TARGETS = ("panel", "single")
# The temporal plant for horizon h: the score (what day t's forward return carries) and the daily
# move planted into day s+1 (a second difference), whose h consecutive sums make the score.
TEMPORAL_FIRST_LAG = 10  # past every n-day return up to 10 days; with h <= 8, inside the 20-day one
TEMPORAL_MAX_HORIZON = 8


def temporal_weights(horizon: int = 5) -> dict[int, float]:
    """The temporal score's weights, lag (days back) -> weight: +1, -1 at lags a, a+1 and
    -1, +1 at a+h, a+h+1 (a = 10): that is (1 - z)(1 - z^h), the h-day sum of the planted moves."""
    a = TEMPORAL_FIRST_LAG
    return {a: 1.0, a + 1: -1.0, a + horizon: -1.0, a + horizon + 1: 1.0}


def temporal_move_weights(horizon: int = 5) -> dict[int, float]:
    """The daily planted move's weights: +1, -2, +1 at lags a+h-1, a+h, a+h+1."""
    b = TEMPORAL_FIRST_LAG + horizon - 1
    return {b: 1.0, b + 1: -2.0, b + 2: 1.0}


TEMPORAL_WEIGHTS = temporal_weights()
LOOKBACK = TEMPORAL_FIRST_LAG + TEMPORAL_MAX_HORIZON + 3  # closes any score needs (the move into day t-k starts at t-k-1)
RATE_TENORS = {"3month": 0.25, "6month": 0.5, "1year": 1, "2year": 2, "3year": 3, "5year": 5, "7year": 7,
               "10year": 10}


class MarketError(ValueError):
    """A generator argument that cannot make a market; the message names the argument."""


@dataclasses.dataclass(frozen=True)
class MarketSpec:
    instruments: int = 50
    days: int = 3780  # 15 years of trading days
    start: str = "2003-01-02"
    plant: Literal["null", "linear", "temporal"] = "null"
    ic: float = 0.0  # the planted score's population correlation with the h-day forward return
    horizon: int = 5
    target: Literal["panel", "single"] = "panel"
    groups: int = 4
    churn: float = 0.2  # share of instruments listed after the start or delisted before the end
    min_window: int = 30 + 5  # seq_len + horizon: a shorter history has no labelled window
    seed: int = 0

    def check(self) -> None:
        if not isinstance(self.instruments, int) or self.instruments < (1 if self.target == "single" else 5):
            raise MarketError(f"instruments: {self.instruments!r}; a panel needs at least 5")
        if self.plant not in PLANTS:
            raise MarketError(f"plant: unknown kind {self.plant!r}; choose from {list(PLANTS)}")
        if self.target not in TARGETS:
            raise MarketError(f"target: unknown {self.target!r}; choose from {list(TARGETS)}")
        if not -1 < self.ic < 1 or not np.isfinite(self.ic):
            raise MarketError(f"ic: {self.ic!r} is outside (-1, 1)")
        if self.plant == "null" and self.ic != 0:
            raise MarketError(f"ic: {self.ic} with plant 'null'; a null market plants nothing (ic 0)")
        if self.plant != "null" and self.ic == 0:
            raise MarketError(f"ic: 0 with plant {self.plant!r}; give the strength to plant, or plant 'null'")
        if self.horizon < 1:
            raise MarketError(f"horizon: {self.horizon} must be at least 1 day")
        if self.plant == "temporal" and self.horizon > TEMPORAL_MAX_HORIZON:
            raise MarketError(f"horizon: {self.horizon} with plant 'temporal'; its lags fit between the 10- and "
                              f"20-day returns only up to a horizon of {TEMPORAL_MAX_HORIZON} days")
        if self.days < self.min_window + LOOKBACK:
            raise MarketError(f"days: {self.days} is fewer than the window plus horizon ({self.min_window}) plus "
                              f"the score's {LOOKBACK} days of look-back")
        if not 0 <= self.churn < 1:
            raise MarketError(f"churn: {self.churn} is outside [0, 1)")
        if not isinstance(self.groups, int) or self.groups < 1:
            raise MarketError(f"groups: {self.groups!r} must be a whole number of at least 1")
        try:
            pd.Timestamp(self.start)
        except ValueError:
            raise MarketError(f"start: not a date: {self.start!r}") from None


@dataclasses.dataclass
class Market:
    spec: MarketSpec
    dates: pd.DatetimeIndex
    tickers: list[str]
    log_close: np.ndarray  # (days, instruments), NaN where not listed
    score: np.ndarray  # (days, instruments): the planted score as standardised (NaN: none that day)
    index_close: np.ndarray
    oil_close: np.ndarray
    rates: pd.DataFrame
    calibration: dict[str, Any]
    realised: dict[str, Any]


# -- calibration ------------------------------------------------------------------------------
def _garch_from_moments(sq: np.ndarray) -> tuple[float, float]:
    """GARCH(1,1) (alpha, beta) whose squared-return autocorrelations match ``sq``'s: the
    persistence alpha + beta from how the autocorrelations decay, alpha from the first lag."""
    sq = sq - sq.mean()
    acf = np.array([np.dot(sq[:-k], sq[k:]) / np.dot(sq, sq) for k in range(1, 21)])
    ratios = acf[1:] / acf[:-1]
    phi = float(np.clip(np.median(ratios[np.isfinite(ratios) & (ratios > 0)]), 0.90, 0.995))
    alphas = np.linspace(0.01, min(0.3, phi - 0.01), 300)
    betas = phi - alphas
    rho1 = alphas * (1 - alphas * betas - betas ** 2) / (1 - 2 * alphas * betas - betas ** 2)
    best = float(alphas[np.argmin(np.abs(rho1 - acf[0]))])
    return float(best), float(phi - best)


def _t_df(excess_kurtosis: float) -> float:
    """Student-t degrees of freedom with this excess kurtosis (6 / (df - 4)), kept in [4.5, 30]."""
    return float(np.clip(4 + 6 / max(excess_kurtosis, 0.2), 4.5, 30.0))


def calibrate(panel_csv: Path = PANEL_CSV, index_csv: Path = INDEX_CSV, start: str = "1995-01-01") -> dict[str, Any]:
    """The factor model's figures, estimated from the shipped panel and the S&P 500 (daily log
    returns since ``start``, the days every one of the 20 has a close)."""
    panel = pd.read_csv(panel_csv, index_col=0, parse_dates=True)
    index = pd.read_csv(index_csv, index_col=0, parse_dates=True).iloc[:, 0]
    closes = panel.join(index.rename("_index"), how="inner").loc[start:].dropna()
    r = np.log(closes).diff().dropna()
    m, stocks = r.pop("_index").to_numpy(), r.to_numpy()
    betas = np.array([np.cov(stocks[:, i], m)[0, 1] / m.var() for i in range(stocks.shape[1])])
    resid = stocks - np.outer(m, betas)
    corr = np.corrcoef(resid.T)
    pairwise = float(corr[np.triu_indices_from(corr, 1)].mean())
    idio = resid.std(axis=0)
    alpha, beta = _garch_from_moments(m ** 2)
    standardised = resid / idio
    kurt = float(((standardised - standardised.mean(0)) ** 4).mean() / standardised.var(0).mean() ** 2 - 3)
    mkt_kurt = float(((m - m.mean()) ** 4).mean() / m.var() ** 2 - 3)
    return {
        "source": f"{panel_csv.name} and {index_csv.name}, daily log returns {closes.index[0].date()} to "
                  f"{closes.index[-1].date()} ({len(r)} days, {stocks.shape[1]} stocks)",
        "market_daily_vol": float(m.std()), "market_daily_mean": float(m.mean()),
        "market_garch_alpha": alpha, "market_garch_beta": beta,
        "market_t_df": _t_df(mkt_kurt / 3),  # a GARCH makes part of the kurtosis: the innovations need less
        "beta_mean": float(betas.mean()), "beta_sd": float(betas.std()),
        "idio_daily_vol_log_mean": float(np.log(idio).mean()), "idio_daily_vol_log_sd": float(np.log(idio).std()),
        "residual_pairwise_corr": pairwise,
        "idio_t_df": _t_df(kurt / 2),
        "market_excess_kurtosis": mkt_kurt, "residual_excess_kurtosis": kurt,
    }


# -- generation -------------------------------------------------------------------------------
def _t(rng: np.random.Generator, df: float, size) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(df, size) / np.sqrt(df / (df - 2))


def planted_score(log_close: np.ndarray, plant: str, horizon: int = 5) -> np.ndarray:
    """The raw planted score of every instrument on every day, from log closes up to that day
    only: row t uses rows t-5..t (linear) or t-(a+h+1)-1..t (temporal) (NaN where a needed
    close is missing)."""
    if plant == "null":
        return np.full(log_close.shape, np.nan)
    if plant == "linear":
        out = np.full(log_close.shape, np.nan)
        out[5:] = -(log_close[5:] - log_close[:-5])
        return out
    return _lagged_moves(log_close, temporal_weights(horizon))


def _lagged_moves(log_close: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """sum over lags k of weights[k] * r[t-k], r[t] the move into day t."""
    r = np.full(log_close.shape, np.nan)
    r[1:] = np.diff(log_close, axis=0)
    out = np.zeros(log_close.shape)
    for lag, w in weights.items():
        part = np.full(log_close.shape, np.nan)
        part[lag:] = w * r[:-lag]
        out = out + part
    return out


def _listing(spec: MarketSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """First and last listed day of each instrument; ``churn`` of them list late or delist
    early, each keeping at least half the history (the first stays listed throughout)."""
    first = np.zeros(spec.instruments, int)
    last = np.full(spec.instruments, spec.days - 1)
    moving = rng.permutation(np.arange(1, spec.instruments))[:int(round(spec.churn * spec.instruments))]
    half = spec.days // 2
    for i in moving:
        if rng.random() < 0.5:
            first[i] = rng.integers(1, half)
        else:
            last[i] = rng.integers(half, spec.days - 1)
    return first, last


def plant_scale(spec: MarketSpec, cal: dict[str, Any], rounds: int = 4) -> float:
    """The planted move per unit score (``c``) that gives ``spec.ic`` in population. The
    overlapping horizons (day t's score shares forward days with its neighbours', which it is
    correlated with) and the score's reaction to the moves it planted make the strength a
    nonlinear function of c: it is found on calibration markets drawn apart from the market
    itself (another seed; at least 3,000 days and 200 names, or 20,000 days for a single
    instrument), scaling c by the ratio of ic / sqrt(1 - ic^2) wanted to realised."""
    if spec.plant == "null":
        return 0.0
    odds = lambda x: x / np.sqrt(1 - x ** 2)  # noqa: E731 - the strength's linear scale
    probe = dataclasses.replace(spec, seed=spec.seed + 1_000_003, churn=0.0,
                                days=20_000 if spec.target == "single" else max(spec.days, 3000),
                                instruments=spec.instruments if spec.target == "single" else max(spec.instruments, 200))
    c = odds(spec.ic) * np.sqrt(spec.horizon) * float(np.exp(cal["idio_daily_vol_log_mean"]))
    tried: list[tuple[float, float]] = []  # (c, realised)
    for _ in range(rounds):
        realised = _probe_strength(probe, cal, c)
        tried.append((c, realised))
        if not np.isfinite(realised) or realised * spec.ic <= 0:
            break
        c *= float(np.clip(odds(spec.ic) / odds(float(np.clip(realised, -0.99, 0.99))), 0.25, 4.0))
    if spec.target == "single" and spec.plant == "temporal":
        c = _bisect_single(probe, cal, c, abs(spec.ic), tried)
    return float(c)


def _probe_strength(probe: MarketSpec, cal: dict[str, Any], c: float) -> float:
    got = _draw(probe, cal, c).realised
    return got["oracle_corr"] if probe.target == "single" else got["oracle_rank_ic"]


def _bisect_single(probe: MarketSpec, cal: dict[str, Any], c: float, target: float, tried: list[tuple[float, float]],
                   rounds: int = 10, tolerance: float = 0.1) -> float:
    """Refine c for one instrument's temporal plant by bisection (in log c). Its planted moves
    feed the later scores that drive more moves, with no cross-section to standardise them back
    each day, so the strength is a steep function of c (on the calibration market: 0.20 at
    c = 0.010, 0.45 at 0.015, and falling again past 0.03) and the ratio steps above overshoot
    and undershoot it (a target of 0.3 came out at 0.17). Stops within ``tolerance`` of the target
    (relative); brackets come from the rising side of the curve only."""
    realised = _probe_strength(probe, cal, c)
    tried.append((c, realised))
    for _ in range(rounds):
        if abs(realised - target) <= tolerance * target:
            return c
        below = [x for x, r in tried if np.isfinite(r) and r < target]
        above = [x for x, r in tried if np.isfinite(r) and r > target]
        lo = max(below, default=min(x for x, _ in tried) / 2)
        hi = min([x for x in above if x > lo], default=max(x for x, _ in tried) * 2)
        c = float(np.sqrt(lo * hi))
        realised = _probe_strength(probe, cal, c)
        tried.append((c, realised))
    return c


def generate(spec: MarketSpec, calibration: dict[str, Any] | None = None, scale: float | None = None) -> Market:
    """A market drawn from the calibrated factor model, with ``spec.plant`` planted at ``spec.ic``
    (``scale``: a ``plant_scale`` already found for this spec, as a benchmark drawing many
    markets of one spec passes it)."""
    spec.check()
    cal = calibration or calibrate()
    c = plant_scale(spec, cal) if scale is None else scale
    market = _draw(spec, cal, c)
    market.realised["plant_scale"] = c
    log.info("market of %d x %d days, plant %s at ic %.3f: realised %s", spec.instruments, spec.days, spec.plant,
             spec.ic, market.realised)
    return market


def _draw(spec: MarketSpec, cal: dict[str, Any], c: float) -> Market:
    rng = np.random.default_rng(spec.seed)
    n, d, h = spec.instruments, spec.days, spec.horizon
    dates = pd.bdate_range(spec.start, periods=d)
    # Market: GARCH(1,1) with t innovations, unconditional variance the real index's.
    a, b = cal["market_garch_alpha"], cal["market_garch_beta"]
    var_bar = cal["market_daily_vol"] ** 2
    z = _t(rng, cal["market_t_df"], d)
    var, m = np.empty(d), np.empty(d)
    var[0] = var_bar
    for t in range(d):
        if t:
            var[t] = var_bar * (1 - a - b) + a * (m[t - 1] - cal["market_daily_mean"]) ** 2 + b * var[t - 1]
        m[t] = cal["market_daily_mean"] + np.sqrt(var[t]) * z[t]
    regime = np.sqrt(var / var_bar)  # every name's volatility clusters with the market's
    betas = rng.normal(cal["beta_mean"], cal["beta_sd"], n)
    idio = np.exp(rng.normal(cal["idio_daily_vol_log_mean"], cal["idio_daily_vol_log_sd"], n))
    # Groups: with G equal groups a share ~1/G of pairs shares one, so the within-group residual
    # correlation is G times the real average pairwise one (kept below 0.6).
    groups = min(spec.groups, n)
    within = float(np.clip(cal["residual_pairwise_corr"] * groups, 0.0, 0.6)) if groups > 1 else 0.0
    group_of = rng.integers(0, groups, n)
    group_share = np.sqrt(within)  # of each name's residual volatility
    g = _t(rng, cal["idio_t_df"], (d, groups))
    eps = _t(rng, cal["idio_t_df"], (d, n))
    resid_unit = group_share * g[:, group_of] + np.sqrt(1 - within) * eps
    # Every name drifts at the market's mean, whatever its beta: the market's drift times a
    # spread of betas made high-beta names earn more, a real cross-sectional signal (a rank IC
    # of about +0.01 for beta on 6 of 6 long "null" markets) that learners found on null markets.
    mu = cal["market_daily_mean"]
    returns = mu + np.outer(m - mu, betas) + resid_unit * (idio * regime[:, None])
    # The plant. Linear: the score's standardised value on day t moves each of days t+1..t+h by
    # c/h, so the h-day forward return carries c times it. Temporal: the standardised daily move
    # (a second difference) of day t goes to day t+1 alone; h of them make the score.
    first, last = _listing(spec, rng)
    listed = (np.arange(d)[:, None] >= first) & (np.arange(d)[:, None] <= last)
    log_close = np.full((d, n), np.nan)
    log_close[0] = np.log(rng.uniform(10, 200, n))
    score = np.full((d, n), np.nan)
    pending = np.zeros((d + h + 1, n))  # planted moves owed to future days
    temporal = spec.plant == "temporal"
    # A single instrument's raw score in units of its own daily volatility (market and idio).
    own_vol = np.sqrt(betas[0] ** 2 * var_bar + idio[0] ** 2)
    ref_vol = np.sqrt(cal["beta_mean"] ** 2 * var_bar + float(np.exp(cal["idio_daily_vol_log_mean"])) ** 2)
    for t in range(1, d):
        log_close[t] = log_close[t - 1] + returns[t] + pending[t]
        if c == 0.0 or t < LOOKBACK:
            continue
        window = log_close[t - LOOKBACK + 1: t + 1]
        raw = planted_score(window, spec.plant, h)[-1]
        drive = _lagged_moves(window, temporal_move_weights(h))[-1] if temporal else raw
        live = listed[t] & listed[t - LOOKBACK + 1] & np.isfinite(raw) & np.isfinite(drive)
        zt, zd = np.full(n, np.nan), np.full(n, np.nan)
        if spec.target == "panel":
            if live.sum() < 5:
                continue
            for out, x in ((zt, raw), (zd, drive)):
                out[live] = (x[live] - x[live].mean()) / (x[live].std() + 1e-12)
        elif live[0]:  # one instrument, standardised by the score's unconditional spread
            # Clipped: the score also sees the moves it planted, and one instrument has no
            # cross-section to standardise it back each day.
            unit = own_vol * regime[t]
            zt[0] = np.clip(raw[0] / (_raw_score_sd(spec.plant, h) * unit), -3, 3)
            zd[0] = np.clip(drive[0] / (_raw_score_sd("temporal_move" if temporal else spec.plant, h) * unit), -3, 3)
        score[t] = zt
        move = np.where(np.isfinite(zd), c * zd, 0.0)
        if spec.target == "panel":
            # In units of the market's volatility now, as every name's noise is: the signal-to-noise,
            # and so the rank IC, is then the same in calm and wild years. A fixed-size move made the
            # IC of a test block depend on its volatility regime, which lasts longer than any
            # bootstrap block: intervals covered the population IC on only 72% of planted markets.
            move *= regime[t]
        if spec.target == "single":
            # In units of this instrument's volatility now (c is set at the typical one): its
            # signal-to-noise is then the same for any instrument, calm or wild, as on the
            # calibration market drawn with another seed (another instrument).
            move[0] *= unit / ref_vol if live[0] else 0.0
            move[1:] = 0.0
        if temporal:
            pending[t + 1] += move
        else:
            pending[t + 1: t + 1 + h] += move / h
    log_close[~listed] = np.nan
    tickers = [f"SYN{i:04d}" for i in range(n)]
    index_close = 1000 * np.exp(np.cumsum(m))
    oil = 60 * np.exp(np.cumsum(0.3 * m + 0.022 * _t(rng, cal["market_t_df"], d)))
    market = Market(spec, dates, tickers, log_close, score, index_close, oil, _rates(rng, dates), cal, {})
    market.realised = realised_strength(market)
    return market


def _raw_score_sd(plant: str, horizon: int = 5) -> float:
    """The raw score's spread in units of a day's move: sqrt of the sum of squared weights."""
    weights = {"null": {0: 1.0}, "linear": {k: 1.0 for k in range(5)}, "temporal": temporal_weights(horizon),
               "temporal_move": temporal_move_weights(horizon)}[plant]
    return float(np.sqrt(sum(w * w for w in weights.values())))


def _rates(rng: np.random.Generator, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """A Treasury-style curve: a mean-reverting short rate and slope (decimal yields, as the
    shipped curve's), each tenor the short rate plus the slope's share at that maturity."""
    d = len(dates)
    short, slope = np.empty(d), np.empty(d)
    short[0], slope[0] = 0.03, 0.015
    for t in range(1, d):
        short[t] = max(0.0, short[t - 1] + 0.002 * (0.03 - short[t - 1]) + 0.0006 * rng.standard_normal())
        slope[t] = slope[t - 1] + 0.003 * (0.015 - slope[t - 1]) + 0.0004 * rng.standard_normal()
    cols = {name: np.round(short + slope * (1 - np.exp(-years / 3)), 5) for name, years in RATE_TENORS.items()}
    return pd.DataFrame(cols, index=dates)


def _rank_rows(x: np.ndarray) -> np.ndarray:
    return pd.DataFrame(x).rank(axis=1).to_numpy(copy=True)


def realised_strength(market: Market) -> dict[str, Any]:
    """What the planted score achieves on these prices: its mean daily rank IC with the h-day
    forward log return (a panel), or its AUROC and correlation for that instrument's direction."""
    h, s, lc = market.spec.horizon, market.score, market.log_close
    fwd = np.full(lc.shape, np.nan)
    fwd[:-h] = lc[h:] - lc[:-h]
    if market.spec.plant == "null":  # what each plant's score would find here: nothing, up to noise
        return {"kind": "null", **{f"{p}_score_rank_ic": _mean_rank_ic(planted_score(lc, p, h), fwd)["ic"]
                                   for p in PLANTS if p != "null"}}
    if market.spec.target == "single":
        ok = np.isfinite(s[:, 0]) & np.isfinite(fwd[:, 0])
        x, y = s[ok, 0], fwd[ok, 0] > 0
        ranks = pd.Series(x).rank().to_numpy()
        auroc = (ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / max(1, y.sum() * (~y).sum())
        return {"kind": "single", "oracle_auroc": float(auroc), "oracle_corr": float(np.corrcoef(x, fwd[ok, 0])[0, 1]),
                "days": int(ok.sum())}
    ic = _mean_rank_ic(s, fwd)
    return {"kind": "panel", "oracle_rank_ic": ic["ic"], "oracle_rank_ic_sd": ic["sd"], "days": ic["days"]}


def _mean_rank_ic(score: np.ndarray, fwd: np.ndarray) -> dict[str, Any]:
    """Mean over days (with at least 5 instruments scored) of the Spearman correlation."""
    ok = np.isfinite(score) & np.isfinite(fwd)
    days = ok.sum(axis=1) >= 5
    rs = _rank_rows(np.where(ok, score, np.nan)[days])
    rf = _rank_rows(np.where(ok, fwd, np.nan)[days])
    rs -= np.nanmean(rs, axis=1, keepdims=True)
    rf -= np.nanmean(rf, axis=1, keepdims=True)
    ics = np.nansum(rs * rf, axis=1) / np.sqrt(np.nansum(rs ** 2, axis=1) * np.nansum(rf ** 2, axis=1))
    return {"ic": float(np.mean(ics)) if len(ics) else float("nan"), "sd": float(np.std(ics)) if len(ics) else
            float("nan"), "days": int(days.sum())}
