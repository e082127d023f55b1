"""Run blocking model code from asyncio: a sync generator drained in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


async def iterate_in_thread(
    make: Callable[[], Iterator[T]], maxsize: int = 256
) -> AsyncIterator[T]:
    """Yield the items of the generator ``make()`` while it runs in a thread.

    The event loop stays free while the model computes. Closing the async iterator
    (client gone) closes the generator in its thread, so ``finally`` blocks there run
    (e.g. stopping generation).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(item) -> None:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        fut.result()

    def run() -> None:
        gen = make()
        try:
            for item in gen:
                if stop.is_set():
                    break
                put(item)
        except BaseException as e:  # re-raised in the consumer
            put(("__error__", e))
            return
        finally:
            gen.close()
        put(_END)

    thread = threading.Thread(target=run, name="medray-gen", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
                raise item[1]
            yield item
    finally:
        stop.set()
        # Drain so a producer blocked on a full queue can see the stop flag.
        while not queue.empty():
            queue.get_nowait()
