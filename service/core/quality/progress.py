"""How far the prediction log's writer has got: rows offered and rows handled (written, spooled or dropped), for
callers that wait until the rows offered before them are handled (a verdict for an answer just given, an answer
waiting for its row to reach the spool's disk during an outage)."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Handled:
    """Thread-safe: the event loop and the shadow thread offer rows, the writer thread handles them."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count_lock = threading.Lock()
        self._offered = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def offer(self) -> None:
        with self._count_lock:
            self._offered += 1

    def handle(self, rows: int) -> None:
        with self._condition:
            self._done += rows
            self._condition.notify_all()
            due = [w for w in self._waiters if w[0] <= self._done]
            self._waiters = [w for w in self._waiters if w[0] > self._done]
        for _, loop, future in due:
            with contextlib.suppress(RuntimeError):  # its loop has closed (a test client's, at its stop)
                loop.call_soon_threadsafe(_settle, future)

    def wait(self, timeout_s: float) -> bool:
        """Blocks until every row offered before the call is handled; False after timeout_s."""
        target = self._offered
        with self._condition:
            return self._condition.wait_for(lambda: self._done >= target, timeout_s)

    async def until(self, timeout_s: float) -> bool:
        """As wait, on the event loop: waits for no thread."""
        target = self._offered
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._condition:
            if self._done >= target:
                return True
            self._waiters.append((target, loop, future))
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            with self._condition:
                self._waiters = [w for w in self._waiters if w[2] is not future]
            return False
        return True


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # a waiter that timed out has cancelled it
        future.set_result(None)
