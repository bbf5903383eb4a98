"""`prefetched`, which reads the next migration chunk while one is written: order, errors at
the point they happened, and a producer that stops (and cleans up) when its consumer leaves."""

import threading

import pytest

from study_query_dagster.services.migration.prefetch import prefetched


def test_items_then_the_error_in_order():
    def make():
        yield 1
        yield 2
        raise ValueError("bad row 3")

    seen = []
    with pytest.raises(ValueError, match="bad row 3"), prefetched(make) as items:
        for item in items:
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_leaves_early_stops_the_producer():
    produced, closed = [], threading.Event()
    threads_before = threading.active_count()

    def make():
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed.set()  # its clean-up runs (in its own thread) once the consumer is gone

    with prefetched(make, depth=1) as items:
        taken = [next(items) for _ in range(3)]
    assert taken == [0, 1, 2]
    assert closed.is_set() and threading.active_count() == threads_before
    assert len(produced) <= 3 + 2  # what was taken, one waiting in the queue, one in hand


def test_an_error_in_the_consumer_stops_the_producer_too():
    closed = threading.Event()

    def make():
        try:
            yield from range(10**9)
        finally:
            closed.set()

    with pytest.raises(RuntimeError), prefetched(make) as items:
        for item in items:
            if item == 5:
                raise RuntimeError("stop")
    assert closed.is_set()
