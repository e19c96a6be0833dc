"""Batches prepared one step ahead on a host thread, so padding and stacking the next batch
overlap the device's work on the current one.

A BatchIterator's batch k is a pure function of k (the epoch orders come from the seed),
so preparing it early changes nothing a checkpoint records: the data position saved after
step k is still k + 1, and a resumed run reads the same batches.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor


class Prefetcher:
    def __init__(self, iterator, total: int):
        self.iterator, self.total = iterator, total
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxunlearn-batches")
        self._lock = threading.Lock()  # the iterator caches epoch orders in a dict
        self._ahead: tuple[int, Future] | None = None

    def _make(self, step: int):
        with self._lock:
            return self.iterator.global_indices(step), self.iterator.batch_at(step)

    def get(self, step: int):
        """(global row indices, this process's arrays) of batch `step`; starts preparing the next."""
        if self._ahead is not None and self._ahead[0] == step:
            future = self._ahead[1]
        else:
            future = self._pool.submit(self._make, step)
        if step + 1 < self.total:
            self._ahead = (step + 1, self._pool.submit(self._make, step + 1))
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
