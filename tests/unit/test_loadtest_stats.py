"""Percentile and summary math of the load harness (nearest rank, never interpolated)."""

from hypothesis import given
from hypothesis import strategies as st

from loadtest.stats import Windows, percentile, summary


def test_nearest_rank_picks_an_observed_sample() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.5) == 100.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_small_samples_round_up_to_the_next_rank() -> None:
    assert percentile([10.0, 20.0, 30.0], 50) == 20.0
    assert percentile([10.0, 20.0, 30.0], 67) == 30.0  # ceil(0.67 * 3) = 3
    assert percentile([7.0], 99) == 7.0


def test_empty_samples_summarise_to_zero_counts() -> None:
    assert percentile([], 99) == 0.0
    out = summary([])
    assert out["count"] == 0
    assert out["p50"] == out["p99"] == out["max"] == 0.0


def test_summary_fields() -> None:
    out = summary([5.0, 1.0, 3.0, 2.0, 4.0], (50, 90))
    assert out == {"p50": 3.0, "p90": 5.0, "max": 5.0, "min": 1.0, "mean": 3.0, "count": 5}


def test_rejects_out_of_range_quantiles() -> None:
    try:
        percentile([1.0], 101)
    except ValueError as error:
        assert "within [0, 100]" in str(error)
    else:
        raise AssertionError("percentile accepted q=101")


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1), st.floats(0, 100), st.floats(0, 100))
def test_percentiles_are_monotone_and_observed(values: list[float], a: float, b: float) -> None:
    ordered = sorted(values)
    low, high = min(a, b), max(a, b)
    assert percentile(ordered, low) <= percentile(ordered, high)
    assert percentile(ordered, high) in ordered


def test_windows_bucket_by_time() -> None:
    windows = Windows(origin=100.0, width=5.0)
    for t, v in [(100.0, 1.0), (104.9, 3.0), (105.0, 10.0), (117.0, 7.0)]:
        windows.add(t, v)
    series = windows.series((50, 99))
    assert [x for x, _ in series] == [0.0, 5.0, 15.0]
    assert series[0][1] == {"p50": 1.0, "p99": 3.0, "count": 2.0}
    assert series[1][1]["p99"] == 10.0
