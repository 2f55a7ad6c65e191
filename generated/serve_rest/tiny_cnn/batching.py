"""Dynamic micro-batching along the model's batch dim 'batch'.

Requests that arrive within ``max_wait`` seconds of each other and have the same
non-batch dims are concatenated along dim 0 (up to ``max_batch`` rows), run as one call
and split back. This trades a little latency for throughput under concurrent load; it
assumes, as a batch dim promises, that rows do not influence each other.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .signature import INPUTS


@dataclass
class _Item:
    inputs: dict
    rows: int
    key: tuple
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """One worker thread that groups requests into batches and runs the engine."""

    def __init__(self, engine, max_batch: int, max_wait: float) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._max_batch = max_batch
        self._max_wait = max(0.0, max_wait)
        self._queue: queue.Queue = queue.Queue()
        self._pending: deque = deque()
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, inputs: dict) -> Future:
        """Queue checked inputs; the future resolves to the outputs of these rows only."""
        first = inputs[INPUTS[0].name]
        key = tuple((inputs[s.name].shape[1:], inputs[s.name].dtype.str) for s in INPUTS)
        item = _Item(inputs, int(first.shape[0]), key)
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        """Stop the worker after the queued requests."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _next(self, timeout: float | None):
        if self._pending:
            return self._pending.popleft()
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return False

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            group = [first]
            rows = first.rows
            deadline = time.monotonic() + self._max_wait
            while rows < self._max_batch:
                item = self._next(max(0.0, deadline - time.monotonic()))
                if item is False:
                    break
                if item is None or item.key != first.key or rows + item.rows > self._max_batch:
                    self._pending.appendleft(item)  # the stop marker or the next batch's first
                    break
                group.append(item)
                rows += item.rows
            self._run(group, rows)

    def _run(self, group: list, rows: int) -> None:
        metrics.BATCH_ROWS.observe(rows)
        try:
            if len(group) == 1:
                outputs = [self._engine.run(group[0].inputs)]
            else:
                joined = {s.name: np.concatenate([g.inputs[s.name] for g in group]) for s in INPUTS}
                merged = self._engine.run(joined)
                for name, value in merged.items():
                    if value.shape[:1] != (rows,):
                        raise RuntimeError(
                            f"output {name!r} has shape {list(value.shape)} for a batch of {rows} rows; "
                            "the model does not keep rows apart, run it without --max-batch"
                        )
                cuts = np.cumsum([g.rows for g in group])[:-1]
                parts = {name: np.split(value, cuts) for name, value in merged.items()}
                outputs = [{name: parts[name][i] for name in merged} for i in range(len(group))]
        except Exception as exc:
            for g in group:
                g.future.set_exception(exc)
            return
        for g, out in zip(group, outputs):
            g.future.set_result(out)
