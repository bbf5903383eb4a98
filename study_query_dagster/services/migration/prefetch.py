"""`prefetched`: run an iterator in a background thread, one item ahead of its consumer.

The migration reads and converts the next chunk of v1 rows while the previous one is being
written: the drivers release the GIL while the database works, so reading and writing overlap.
At most `depth` items wait in between, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


@contextmanager
def prefetched(
    make: Callable[[], Iterable[T]], depth: int = 1, name: str = "prefetch"
) -> Iterator[Iterator[T]]:
    """Iterate `make()` in a thread; its items (and its exception, at the point it was raised)
    come out in order. Leaving the block early stops the thread after its current item."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = threading.Event()  # the consumer has seen the end (or the error)

    def produce() -> None:
        iterator = iter(make())
        try:
            for item in iterator:
                items.put((item, None))
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            items.put((_DONE, exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (its open cursors) runs in this thread
        items.put((_DONE, None))

    def consume() -> Iterator[T]:
        while True:
            item, error = items.get()
            if item is _DONE:
                finished.set()
                if error is not None:
                    raise error
                return
            yield item

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        # A consumer that left early: take what the producer still puts (it stops after its
        # current item) until its end marker, so it is never left blocked on a full queue.
        while not finished.is_set():
            if items.get()[0] is _DONE:
                finished.set()
        thread.join()
