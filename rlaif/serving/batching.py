"""Many concurrent requests in, one backend step at a time out: a bounded queue drained by one worker thread.

Why one thread: a torch model must not run in two threads at once, and a model's throughput
comes from batching. So every request becomes a job on a queue, and a single worker thread
takes as many waiting jobs of one kind as fit in ``max_batch`` prompts into one backend call.
The event loop only appends to the queue (under a lock held for microseconds) and awaits a
future, so it never waits for the model. A full queue is refused at once (``QueueFull``, an
HTTP 429) rather than growing until clients time out. When a batch of several jobs fails, each
job is run again alone, so one bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` waiting jobs; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"the queue is full ({waiting} requests waiting); retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One request's items, of one ``kind``; each item costs ``prompts_per_item`` prompts."""

    kind: str
    items: list
    prompts_per_item: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def prompts(self) -> int:
        return len(self.items) * self.prompts_per_item


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class BatchWorker:
    """Runs ``runner.run(kind, items) -> results`` (one result per item) for queued jobs, in one thread.

    ``make_runner`` is called in the worker thread when it starts, so whatever the runner
    opens there (a SQLite score cache, a model's state) is only ever used by that thread.
    """

    def __init__(self, make_runner: Callable[[], Any], *, max_batch: int, max_queue: int):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
        self.make_runner, self.max_batch, self.max_queue = make_runner, max_batch, max_queue
        self.runner: Any = None
        self._waiting: deque[Job] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Counters for /health: jobs in the step now running, steps run, items answered, seconds of the last step.
        self.running = 0
        self.stats = {"requests": 0, "items": 0, "batches": 0, "failed_requests": 0}
        self.last_batch_seconds = 0.0

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float | None = None) -> None:
        """Start the thread and wait until the runner is built; an error building it is raised here."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._main, args=(ready, failure), name="rlaif-batch-worker",
                                        daemon=True)
        self._thread.start()
        ready.wait(timeout)
        if failure:
            raise failure[0]

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # ---------------------------------------------------------------- event-loop side

    async def submit(self, kind: str, items: Sequence, prompts_per_item: int = 1) -> list:
        """The results for ``items``, in order; raises ``QueueFull`` at once when the queue is full."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        job = Job(kind, list(items), prompts_per_item, loop, loop.create_future())
        with self._lock:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(len(self._waiting), max(1, math.ceil(self.last_batch_seconds)))
            self._waiting.append(job)
            self._lock.notify()
        return await job.future

    # ---------------------------------------------------------------- worker thread

    def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            self.runner = self.make_runner()
        except BaseException as exc:  # reported by start(), in the caller's thread
            failure.append(exc)
            ready.set()
            return
        ready.set()
        while True:
            batch = self._take()
            if batch is None:
                return
            self._run(batch)

    def _take(self) -> list[Job] | None:
        """The oldest job and the jobs of its kind right behind it, up to ``max_batch`` prompts."""
        with self._lock:
            while not self._waiting and not self._stopping:
                self._lock.wait()
            if self._stopping:
                for job in self._waiting:
                    job.loop.call_soon_threadsafe(_settle, job.future, None, RuntimeError("the server shut down"))
                self._waiting.clear()
                return None
            batch = [self._waiting.popleft()]
            prompts = batch[0].prompts
            while (self._waiting and self._waiting[0].kind == batch[0].kind
                   and prompts + self._waiting[0].prompts <= self.max_batch):
                prompts += self._waiting[0].prompts
                batch.append(self._waiting.popleft())
            self.running = len(batch)
            return batch

    def _results(self, jobs: list[Job]) -> list[list]:
        """Each job's results, from backend calls of at most ``max_batch`` prompts (one job may need several)."""
        items = [item for job in jobs for item in job.items]
        step = max(1, self.max_batch // jobs[0].prompts_per_item)
        results: list = []
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            answers = self.runner.run(jobs[0].kind, chunk)
            if len(answers) != len(chunk):
                raise RuntimeError(f"the runner answered {len(answers)} of {len(chunk)} items")
            results += answers
            self.stats["batches"] += 1
        split, start = [], 0
        for job in jobs:
            split.append(results[start:start + len(job.items)])
            start += len(job.items)
        return split

    def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        try:
            outcomes = [(job, answers, None) for job, answers in zip(batch, self._results(batch))]
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [(batch[0], None, exc)]
            else:  # find the job that fails: each alone, so the others still get their answers
                outcomes = []
                for job in batch:
                    try:
                        outcomes.append((job, self._results([job])[0], None))
                    except Exception as alone:
                        outcomes.append((job, None, alone))
        self.last_batch_seconds = time.monotonic() - started
        for job, answers, error in outcomes:
            self.stats["requests"] += 1
            self.stats["items"] += len(job.items) if error is None else 0
            self.stats["failed_requests"] += error is not None
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, answers, error)
            except RuntimeError:  # the event loop is closed: the server is going down
                pass
        self.running = 0
