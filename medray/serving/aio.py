"""Run blocking model code from asyncio: a sync generator drained in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def iterate_in_thread(
    make: Callable[[], Iterator[T]], maxsize: int = 256, *, coalesce: bool = False
) -> AsyncIterator[Any]:
    """Yield the items of the generator ``make()`` while it runs in a thread.

    The event loop stays free while the model computes. Closing the async iterator
    (client gone) closes the generator in its thread, so ``finally`` blocks there run
    (e.g. stopping generation). With ``coalesce=True`` it yields lists: each holds every
    item produced since the previous list was taken, so a consumer that sends items over
    the network sends fewer, larger messages when it falls behind, without waiting.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(item) -> None:
        if stop.is_set():  # the consumer left (its loop may be closed): nobody reads
            return
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def run() -> None:
        gen = make()
        try:
            for item in gen:
                if stop.is_set():
                    break
                put(item)
        except BaseException as e:  # re-raised in the consumer
            put(_Failed(e))
            return
        finally:
            gen.close()
        put(_END)

    thread = threading.Thread(target=run, name="medray-gen", daemon=True)
    thread.start()
    try:
        done = False
        while not done:
            items = [await queue.get()]
            if coalesce:
                while not queue.empty() and items[-1] is not _END:
                    items.append(queue.get_nowait())
            out = []
            for item in items:
                if item is _END:
                    done = True
                    break
                if isinstance(item, _Failed):
                    raise item.error
                out.append(item)
            if coalesce:
                if out:
                    yield out
            else:
                for item in out:
                    yield item
    finally:
        stop.set()
        # Drain so a producer blocked on a full queue can see the stop flag.
        while not queue.empty():
            queue.get_nowait()
