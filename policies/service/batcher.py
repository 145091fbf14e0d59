"""Dynamic batching on an asyncio event loop, for the actor backend.

Requests wait in a FIFO queue. A batch is taken when the queued states reach
``max_batch_size`` or when the oldest queued request has waited ``max_wait_s``, whichever
comes first, and only while no other batch is running. So requests that arrive while the
teacher computes are taken together as soon as it is free, and a request that waited
longer than ``max_wait_s`` behind a running batch goes in the next batch without a further wait.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

from policies.service.config import LabelServiceError
from policies.service.replica import QueuedRequest

logger = logging.getLogger(__name__)


class DynamicBatcher:
    """A queue of requests and the loop that takes batches from it.

    Args:
        max_batch_size: maximum states in a batch. A first request larger than this goes alone.
        max_wait_s: maximum wait of the oldest queued request for a batch to fill.
        run_batch: labels a batch; called as ``run_batch(batch, dequeued_at=...)``.
        fail_batch: resolves a batch with an error when ``run_batch`` raised.
    """

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_wait_s: float,
        run_batch: Callable[..., Awaitable[None]],
        fail_batch: Callable[[list[QueuedRequest], BaseException], None],
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._run_batch = run_batch
        self._fail_batch = fail_batch
        self._queue: collections.deque[QueuedRequest] = collections.deque()
        self._queued_states = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def put(self, queued: QueuedRequest) -> None:
        """Add a request. Must be called on the event loop that runs the batches."""
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._batch_loop())
        self._queue.append(queued)
        self._queued_states += queued.size
        assert self._wakeup is not None
        self._wakeup.set()

    async def _batch_loop(self) -> None:
        while True:
            await self._wait_for_batch()
            batch = self._take_batch()
            try:
                await self._run_batch(batch, dequeued_at=time.perf_counter())
            except Exception as exc:
                # run_batch catches the teacher's errors itself, so this is a service bug.
                logger.exception("label batch of %d requests failed outside the teacher", len(batch))
                self._fail_batch(batch, LabelServiceError(f"the label service failed on a batch: {exc!r}"))

    async def _wait_for_batch(self) -> None:
        """Return once the queue has a full batch or its oldest request has waited ``max_wait_s``."""
        assert self._wakeup is not None
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()

        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrival + self.max_wait_s
        while self._queued_states < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            timer = loop.call_later(remaining, self._wakeup.set)
            await self._wakeup.wait()
            timer.cancel()

    def _take_batch(self) -> list[QueuedRequest]:
        batch = [self._queue.popleft()]
        states = batch[0].size
        while self._queue and states + self._queue[0].size <= self.max_batch_size:
            queued = self._queue.popleft()
            batch.append(queued)
            states += queued.size
        self._queued_states -= states
        return batch
