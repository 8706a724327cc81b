import base64
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from geodesic.contracts import Bar, FeatureVector, Tick
from geodesic.features import (
    FEATURE_NAMES,
    SCHEMA_HASH,
    WARMUP_BARS,
    BarBuilder,
    FeatureEngine,
    FeatureParams,
    compute_features_batch,
    schema_hash,
    warmup_bars,
)
from geodesic.features.compute import SNAPSHOT_FORMAT_V1

SEC = 1_000_000_000


def make_series(
    n: int,
    seed: int = 0,
    vol: float = 0.01,
    level: float = 100.0,
    zero_frac: float = 0.0,
    volume_kind: str = "random",
) -> tuple[np.ndarray, ...]:
    """Random-walk bars: closes, highs, lows, volumes, spreads (lows <= closes <= highs)."""
    rng = np.random.default_rng(seed)
    rets = rng.normal(0.0, vol, n)
    rets[rng.uniform(size=n) < zero_frac] = 0.0
    closes = level * np.exp(np.cumsum(rets))
    highs = closes * (1.0 + rng.uniform(0.0, 0.01, n))
    lows = closes * (1.0 - rng.uniform(0.0, 0.01, n))
    volumes = {
        "random": rng.gamma(2.0, 50.0, n),
        "zero": np.zeros(n),
        "constant": np.full(n, 7.0),
    }[volume_kind]
    spreads = closes * rng.uniform(0.0, 5e-4, n)
    return closes, highs, lows, volumes, spreads


def make_bars(series: tuple[np.ndarray, ...], symbol: str = "ES") -> list[Bar]:
    closes, highs, lows, volumes, spreads = series
    return [
        Bar(
            symbol=symbol,
            bar_index=i,
            bar_seconds=60,
            open=closes[i],
            high=highs[i],
            low=lows[i],
            close=closes[i],
            vwap=closes[i],
            volume=volumes[i],
            n_ticks=1,
            mean_spread=spreads[i],
            open_ts_ns=i * 60 * SEC,
            close_ts_ns=i * 60 * SEC + 1,
        )
        for i in range(len(closes))
    ]


def stream(engine: FeatureEngine, bars: list[Bar]) -> np.ndarray:
    """Streaming output as an (n, d) array with NaN rows where on_bar returned None."""
    rows = []
    for bar in bars:
        values = engine.on_bar(bar)
        rows.append([math.nan] * len(engine.names) if values is None else values)
    return np.array(rows, dtype=np.float64).reshape(len(bars), len(engine.names))


def stream_list(bars: list[Bar]) -> list[list[float] | None]:
    engine = FeatureEngine()
    return [engine.on_bar(b) for b in bars]


def naive_features(series: tuple[np.ndarray, ...], t: int) -> list[float]:
    """Slow, obviously-correct reference for the default parameters at bar t."""
    c, h, lo, v, s = series
    r = np.diff(np.log(c))  # r[i - 1] is the return into bar i

    def zscore(x: np.ndarray, w: int) -> float:
        win = x[t - w + 1 : t + 1]
        sd = np.std(win, ddof=1)
        return 0.0 if sd <= 1e-12 * abs(win.mean()) else (x[t] - win.mean()) / sd

    rsi_rets = r[t - 14 : t]
    up, down = rsi_rets[rsi_rets > 0].sum(), -rsi_rets[rsi_rets < 0].sum()
    rsi = 50.0 if up + down == 0 else 100.0 * up / (up + down)
    hl = np.log(h[t - 19 : t + 1] / lo[t - 19 : t + 1])
    return [
        math.log(c[t] / c[t - 1]),
        math.log(c[t] / c[t - 4]),
        math.log(c[t] / c[t - 16]),
        float(np.std(r[t - 20 : t], ddof=1)),
        math.sqrt(np.mean(hl**2) / (4 * math.log(2))),
        s[t] / c[t] * 1e4,
        (rsi - 50.0) / (50.0 / math.sqrt(14)),
        zscore(c, 50),
        zscore(v, 50),
    ]


def test_defaults_have_the_documented_names_order_and_warmup():
    assert FEATURE_NAMES == (
        "logret_1",
        "logret_4",
        "logret_16",
        "rvol_20",
        "pvol_20",
        "spread_bp",
        "rsi_14_z",
        "close_z_50",
        "volume_z_50",
    )
    assert WARMUP_BARS == 50


def test_schema_hash_is_pinned_and_changes_with_every_parameter():
    # Pinned: changing it is a deliberate, model-breaking act (retrain and re-register).
    assert SCHEMA_HASH == "16234d51e220aefa"
    assert schema_hash(FeatureParams()) == SCHEMA_HASH
    variants = [
        FeatureParams(horizons=(1, 4, 32)),
        FeatureParams(rvol_window=21),
        FeatureParams(pvol_window=21),
        FeatureParams(rsi_window=15),
        FeatureParams(zscore_window=51),
        FeatureParams(volume_window=51),
    ]
    assert len({schema_hash(p) for p in variants} | {SCHEMA_HASH}) == len(variants) + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"horizons": ()},
        {"horizons": (4, 1)},
        {"horizons": (1, 1)},
        {"horizons": (0,)},
        {"rvol_window": 1},
        {"zscore_window": 1},
        {"unknown": 3},
    ],
)
def test_feature_params_reject_nonsense(kwargs):
    with pytest.raises(ValidationError):
        FeatureParams(**kwargs)


def test_warmup_is_the_longest_lookback():
    assert warmup_bars(FeatureParams(horizons=(1, 64))) == 65
    assert warmup_bars(FeatureParams(rvol_window=60)) == 61
    assert warmup_bars(FeatureParams(zscore_window=2, volume_window=2)) == 21


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": 1},
        {"seed": 2, "vol": 1e-4, "level": 1e-3},
        {"seed": 3, "vol": 0.0},  # flat prices: zero returns, rvol, rsi_z and close_z
        {"seed": 4, "zero_frac": 0.6},  # many repeated closes
        {"seed": 5, "volume_kind": "zero"},
        {"seed": 6, "volume_kind": "constant"},
    ],
)
def test_batch_matches_the_naive_reference(kwargs):
    series = make_series(120, **kwargs)
    out = compute_features_batch(*series)
    assert out.shape == (120, len(FEATURE_NAMES))
    assert np.isnan(out[: WARMUP_BARS - 1]).all()
    expected = np.array([naive_features(series, t) for t in range(WARMUP_BARS - 1, 120)])
    np.testing.assert_allclose(out[WARMUP_BARS - 1 :], expected, rtol=1e-9, atol=1e-12)


def test_flat_prices_give_zero_volatility_and_neutral_oscillators():
    series = make_series(60, vol=0.0, volume_kind="constant")
    row = compute_features_batch(*series)[-1]
    named = dict(zip(FEATURE_NAMES, row, strict=True))
    for name in ("logret_1", "logret_16", "rvol_20", "rsi_14_z", "close_z_50", "volume_z_50"):
        assert named[name] == 0.0, name


def test_engine_returns_none_during_warmup_then_a_vector_every_bar():
    engine = FeatureEngine()
    bars = make_bars(make_series(WARMUP_BARS + 3))
    results = [engine.on_bar(bar) for bar in bars]
    assert all(r is None for r in results[: WARMUP_BARS - 1])
    assert all(
        isinstance(r, list) and len(r) == len(FEATURE_NAMES) for r in results[WARMUP_BARS - 1 :]
    )
    assert engine.stats_dict() == {
        "bars": WARMUP_BARS + 3,
        "vectors": 4,
        "warming_up": WARMUP_BARS - 1,
        "stale_bars": 0,
        "non_finite": 0,
    }


regimes = st.fixed_dictionaries(
    {
        "n": st.integers(1, 140),
        "seed": st.integers(0, 2**32 - 1),
        "vol": st.sampled_from([0.0, 1e-6, 1e-3, 0.02, 0.2]),
        "level": st.sampled_from([1e-4, 0.5, 100.0, 5e4, 1e7]),
        "zero_frac": st.sampled_from([0.0, 0.3, 0.9]),
        "volume_kind": st.sampled_from(["random", "zero", "constant"]),
    }
)


@settings(max_examples=60, deadline=None)
@given(regimes)
def test_streaming_engine_equals_batch_on_the_same_bars(regime):
    series = make_series(**regime)
    batch = compute_features_batch(*series)
    streamed = stream(FeatureEngine(), make_bars(series))
    np.testing.assert_allclose(streamed, batch, rtol=0, atol=1e-12)
    # Both paths agree on which bars have no vector.
    assert (np.isnan(streamed).any(axis=1) == np.isnan(batch).any(axis=1)).all()


@settings(max_examples=60, deadline=None)
@given(regimes)
def test_features_are_finite_after_warmup_for_finite_inputs(regime):
    out = compute_features_batch(*make_series(**regime))
    assert np.isfinite(out[WARMUP_BARS - 1 :]).all()


@settings(max_examples=60, deadline=None)
@given(
    regimes.filter(lambda r: r["n"] >= WARMUP_BARS),
    st.sampled_from([1e-3, 0.37, 7.3, 1_000.0]),
)
def test_scaling_all_prices_leaves_features_unchanged(regime, k):
    closes, highs, lows, volumes, spreads = make_series(**regime)
    base = compute_features_batch(closes, highs, lows, volumes, spreads)
    scaled = compute_features_batch(closes * k, highs * k, lows * k, volumes, spreads * k)
    assert (np.isnan(scaled) == np.isnan(base)).all()
    ok = ~np.isnan(base)
    bound = scaling_error_bound(closes, base)
    assert (np.abs(scaled - base)[ok] <= bound[ok]).all()


def scaling_error_bound(closes: np.ndarray, base: np.ndarray) -> np.ndarray:
    """How far each feature may move when every price is multiplied by k, from the arithmetic.

    Multiplying by k rounds each price by at most one unit roundoff u (relative), so a log
    return moves by at most ~2u absolute, whatever its size. Features built from returns
    inherit that absolute error; those that divide by a small quantity amplify it by exactly
    their condition number, which the bound carries (these are ill-conditioned inputs, not
    an unstable algorithm: the z-score is two-pass, RSI sums returns without cancellation):
    - rsi_14_z = sqrt(w) (up - down) / (up + down): |d| <= sqrt(w) * 2 w * 4u / total, total
      = the sum of |returns| in the window (tiny for a near-flat series);
    - close_z_50 = (x - mean) / sd: |d| <= (2 + w) u * max|x| * (1 + |z|) / sd, max|x|/sd
      = 1/relative price variation (about 1e7 for a series moving 1e-7 per bar);
    - volume_z_50: volumes are not scaled, so it must not move at all.
    """
    u = 2.0**-53
    names = list(FEATURE_NAMES)
    bound = np.full(base.shape, 16 * u)  # log returns, realized and Parkinson volatility
    bound[:, names.index("spread_bp")] = 8 * u * np.abs(base[:, names.index("spread_bp")])
    rets = np.abs(np.diff(np.log(closes), prepend=np.nan))
    w = 14
    total = np.convolve(np.nan_to_num(rets), np.ones(w))[: len(closes)]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound[:, names.index("rsi_14_z")] = np.sqrt(w) * 2 * w * 4 * u / total + 16 * u
        w = 50
        windows = np.lib.stride_tricks.sliding_window_view(closes, w)
        spread = np.full(len(closes), np.nan)
        top = np.full(len(closes), np.nan)
        spread[w - 1 :] = windows.std(axis=1, ddof=1)
        top[w - 1 :] = np.abs(windows).max(axis=1)
        z = np.abs(base[:, names.index("close_z_50")])
        bound[:, names.index("close_z_50")] = (2 + w) * u * top * (1 + z) / spread + 16 * u
    bound[:, names.index("volume_z_50")] = 0.0
    return np.nan_to_num(bound, nan=np.inf, posinf=np.inf)


def test_streaming_equals_batch_end_to_end_from_interleaved_ticks():
    """Ticks -> bars -> features: the service path and the training path on the same bars."""
    rng = np.random.default_rng(7)
    builder, engine = BarBuilder(1), FeatureEngine()
    bars: dict[str, list[Bar]] = {"ES": [], "NQ": []}
    streamed: dict[str, list[list[float] | None]] = {"ES": [], "NQ": []}
    price = {"ES": 4_000.0, "NQ": 15_000.0}
    ts = 1_700_000_000 * SEC
    for seq in range(3_000):
        ts += int(rng.integers(1, SEC // 10))
        symbol = "ES" if rng.uniform() < 0.5 else "NQ"
        price[symbol] *= math.exp(rng.normal(0.0, 2e-4))
        p = price[symbol]
        t = Tick(
            venue="X",
            symbol=symbol,
            seq=seq,
            ts_ns=ts,
            bid=p - 0.25,
            ask=p + 0.25,
            last=p,
            size=float(rng.integers(0, 5)),
        )
        closed = builder.on_tick(t, ts).closed
        if closed is not None:
            bars[closed.symbol].append(closed)
            streamed[closed.symbol].append(engine.on_bar(closed))
    for symbol in ("ES", "NQ"):
        series = [
            np.array([getattr(b, f) for b in bars[symbol]])
            for f in ("close", "high", "low", "volume", "mean_spread")
        ]
        batch = compute_features_batch(*series)
        assert len(bars[symbol]) > WARMUP_BARS
        for row, values in zip(batch, streamed[symbol], strict=True):
            if values is None:
                assert np.isnan(row).all()
            else:
                np.testing.assert_allclose(values, row, rtol=0, atol=1e-12)


def test_redelivered_or_older_bar_is_ignored_and_does_not_shift_history():
    bars = make_bars(make_series(80))
    clean = stream(FeatureEngine(), bars)
    engine = FeatureEngine()
    noisy = []
    for i, bar in enumerate(bars):
        noisy.append(engine.on_bar(bar))
        if i % 7 == 0:
            assert engine.on_bar(bar) is None  # redelivery
        if i > 3 and i % 11 == 0:
            assert engine.on_bar(bars[i - 3]) is None  # older bar
    assert engine.stats.stale_bars == len(range(0, 80, 7)) + len(
        [i for i in range(4, 80) if i % 11 == 0]
    )
    rows = np.array([r if r is not None else [math.nan] * len(FEATURE_NAMES) for r in noisy])
    np.testing.assert_array_equal(rows, clean)


def test_symbols_do_not_share_history():
    es, nq = make_bars(make_series(70, seed=1), "ES"), make_bars(make_series(70, seed=2), "NQ")
    engine = FeatureEngine()
    got: dict[str, list[list[float] | None]] = {"ES": [], "NQ": []}
    for a, b in zip(es, nq, strict=True):
        got["ES"].append(engine.on_bar(a))
        got["NQ"].append(engine.on_bar(b))
    assert got["ES"] == stream_list(es)
    assert got["NQ"] == stream_list(nq)
    assert got["ES"][-1] != got["NQ"][-1]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 130), st.integers(0, 2**32 - 1))
def test_snapshot_restore_mid_stream_gives_identical_output(cut, seed):
    bars = make_bars(make_series(130, seed=seed)) + make_bars(make_series(90, seed=seed + 1), "NQ")
    bars.sort(key=lambda b: (b.bar_index, b.symbol))
    expected = stream_list(bars)

    first = FeatureEngine()
    got = [first.on_bar(b) for b in bars[:cut]]
    second = FeatureEngine()
    second.restore(json.loads(json.dumps(first.snapshot())))
    got += [second.on_bar(b) for b in bars[cut:]]
    assert got == expected


def v1_snapshot(engine: FeatureEngine) -> dict:
    """The format /1 snapshot (JSON float lists) older checkpoints hold."""
    return {
        "format": SNAPSHOT_FORMAT_V1,
        "schema_hash": engine.schema_hash,
        "symbols": {
            symbol: {"last_bar_index": state.last_bar_index, "history": state.history()}
            for symbol, state in engine._states.items()
        },
    }


def test_restore_refuses_another_schema_or_a_corrupt_history():
    engine = FeatureEngine()
    for bar in make_bars(make_series(5)):
        engine.on_bar(bar)
    state = engine.snapshot()
    with pytest.raises(ValueError, match="schema_hash"):
        FeatureEngine(FeatureParams(rsi_window=10)).restore(state)
    with pytest.raises(ValueError, match="unsupported snapshot format"):
        FeatureEngine().restore({**state, "format": "geodesic.features.feature_engine/9"})
    short = json.loads(json.dumps(state))
    short["symbols"]["ES"]["bars"] += 1
    with pytest.raises(ValueError, match="equal length"):
        FeatureEngine().restore(short)
    not_b64 = json.loads(json.dumps(state))
    not_b64["symbols"]["ES"]["history_f64"] = "not base64!"
    with pytest.raises(ValueError, match="base64"):
        FeatureEngine().restore(not_b64)
    too_long = json.loads(json.dumps(state))
    too_long["symbols"]["ES"]["bars"] = WARMUP_BARS + 1
    too_long["symbols"]["ES"]["history_f64"] = base64.b64encode(
        np.ones((5, WARMUP_BARS + 1)).tobytes()
    ).decode()
    with pytest.raises(ValueError, match="window"):
        FeatureEngine().restore(too_long)

    old = v1_snapshot(engine)  # the same checks hold for format /1 checkpoints
    ragged = json.loads(json.dumps(old))
    ragged["symbols"]["ES"]["history"][0].append(1.0)
    with pytest.raises(ValueError, match="equal length"):
        FeatureEngine().restore(ragged)
    too_long = json.loads(json.dumps(old))
    too_long["symbols"]["ES"]["history"] = [[1.0] * (WARMUP_BARS + 1)] * 5
    with pytest.raises(ValueError, match="window"):
        FeatureEngine().restore(too_long)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 130), st.integers(0, 2**32 - 1))
def test_a_format_1_checkpoint_restores_the_same_state_as_format_2(cut, seed):
    bars = make_bars(make_series(130, seed=seed)) + make_bars(make_series(90, seed=seed + 1), "NQ")
    bars.sort(key=lambda b: (b.bar_index, b.symbol))
    first = FeatureEngine()
    for b in bars[:cut]:
        first.on_bar(b)
    from_v1, from_v2 = FeatureEngine(), FeatureEngine()
    from_v1.restore(json.loads(json.dumps(v1_snapshot(first))))
    from_v2.restore(json.loads(json.dumps(first.snapshot())))
    assert from_v1.snapshot() == from_v2.snapshot() == first.snapshot()
    assert [from_v1.on_bar(b) for b in bars[cut:]] == [from_v2.on_bar(b) for b in bars[cut:]]


def test_a_snapshot_re_encodes_only_symbols_that_closed_a_bar():
    es, nq = make_bars(make_series(60)), make_bars(make_series(60, seed=1), "NQ")
    engine = FeatureEngine()
    for a, b in zip(es[:30], nq[:30], strict=True):
        engine.on_bar(a)
        engine.on_bar(b)
    before = engine.snapshot()
    engine.on_bar(es[30])
    after = engine.snapshot()
    assert after["symbols"]["NQ"] == before["symbols"]["NQ"]
    assert after["symbols"]["ES"] != before["symbols"]["ES"]
    assert after["symbols"]["ES"]["bars"] == 31
    reference = FeatureEngine()  # a cached entry is exactly what a fresh encode gives
    reference.restore(json.loads(json.dumps(after)))
    assert reference.snapshot() == after


def test_custom_parameters_apply_to_both_paths():
    params = FeatureParams(
        horizons=(1, 2),
        rvol_window=3,
        pvol_window=2,
        rsi_window=3,
        zscore_window=4,
        volume_window=5,
    )
    assert warmup_bars(params) == 5
    series = make_series(40, seed=9)
    batch = compute_features_batch(*series, params=params)
    streamed = stream(FeatureEngine(params), make_bars(series))
    assert batch.shape == (40, 8)
    assert np.isnan(batch[:4]).all() and np.isfinite(batch[4:]).all()
    np.testing.assert_allclose(streamed, batch, rtol=0, atol=1e-12)


def test_a_row_with_an_overflowing_value_is_none_in_stream_and_nan_in_batch():
    closes, highs, lows, volumes, spreads = make_series(WARMUP_BARS + 1)
    closes[-2] = lows[-2] = 1e-300
    highs[-2] = 1e-299
    closes[-1] = highs[-1] = lows[-1] = 1e300  # close / previous close overflows
    spreads[-2:] = 0.0
    series = (closes, highs, lows, volumes, spreads)
    batch = compute_features_batch(*series)
    assert np.isnan(batch[-1]).all()
    engine = FeatureEngine()
    assert [engine.on_bar(b) for b in make_bars(series)][-1] is None
    assert engine.stats.non_finite == 1


@pytest.mark.parametrize(
    ("index", "bad", "match"),
    [
        (0, np.nan, "non-finite"),
        (4, np.inf, "non-finite"),
        (0, 0.0, "prices"),
        (2, -1.0, "prices"),
        (3, -1.0, "volumes"),
        (2, 1e9, "highs must be >= lows"),
    ],
)
def test_batch_rejects_inputs_the_bar_contract_would_reject(index, bad, match):
    series = [a.copy() for a in make_series(60)]
    series[index][10] = bad
    with pytest.raises(ValueError, match=match):
        compute_features_batch(*series)


def test_batch_rejects_misaligned_inputs():
    series = list(make_series(60))
    series[1] = series[1][:-1]
    with pytest.raises(ValueError, match="highs must be 1-D with length 60"):
        compute_features_batch(*series)


def test_vector_wraps_values_in_the_contract_with_the_engine_schema_hash():
    engine = FeatureEngine()
    bars = make_bars(make_series(WARMUP_BARS))
    values = [engine.on_bar(b) for b in bars][-1]
    vector = engine.vector(bars[-1], values, hops={"feature": 5})
    assert isinstance(vector, FeatureVector)
    assert vector.values == values
    assert vector.schema_hash == SCHEMA_HASH
    assert (vector.bar_index, vector.ts_ns, vector.close) == (
        bars[-1].bar_index,
        bars[-1].close_ts_ns,
        bars[-1].close,
    )
    assert FeatureVector.from_bytes(vector.to_bytes()) == vector
