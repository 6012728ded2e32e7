"""The engine's batched metric updates write what one `observe` per token would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from clawdbot.services.inference.metrics import observe_many

BUCKETS = (0.005, 0.01, 0.1, 1.0, 10.0)


def samples(histogram: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in histogram.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(st.lists(st.tuples(st.floats(0, 20, allow_nan=False), st.integers(1, 300)), max_size=8))
def test_observe_many_equals_repeated_observe(observations: list[tuple[float, int]]) -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    each = Histogram("itl", "x", buckets=BUCKETS, registry=one)
    batched = Histogram("itl", "x", buckets=BUCKETS, registry=many)
    for value, count in observations:
        for _ in range(count):
            each.observe(value)
        observe_many(batched, value, count)
    expected, got = samples(each), samples(batched)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key
