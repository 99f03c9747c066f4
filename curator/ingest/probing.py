"""Probing files in worker processes, where a decoder that crashes costs only its file.

A decoder can take its whole process down (a segfault in a codec, the OOM killer, a
plugin calling ``os._exit``). The pool then breaks and every file in flight fails with
it, so those files are probed again one at a time in a fresh pool: the one that breaks
it again is recorded as ``crashed`` and the rest are catalogued as usual.
"""

from __future__ import annotations

import logging
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from curator.ingest.probe import (
    Prepare,
    ProbeProblem,
    ProbeResult,
    failure_kind,
    failure_message,
    probe,
)
from curator.workers import process_pool

Outcome = ProbeResult | ProbeProblem
CRASHED = "crashed"
IN_FLIGHT_PER_WORKER = 8  # enough to keep a worker busy; small, since a crash re-probes them


@dataclass(slots=True)
class Candidate:
    """A file to probe, with the size and mtime the walk saw."""

    path: str
    size: int
    mtime_ns: int
    sidecars: list[str]


# A worker keeps the scan's `prepare` hook from its initializer, so each file ships only
# its path (a hook holding models would otherwise be pickled with every file). The
# main process never sets this.
_WORKER_PREPARE: list[Prepare] = []


def _init_worker(setup: Callable[[], None] | None, prepare: Prepare | None = None) -> None:
    # Ctrl-C reaches the whole process group: the scan itself stops and saves what is
    # done, so workers must not die mid-file and look like crashes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Pillow logs a few errors itself before raising; the raise becomes the problem
    # row, so the log line must not reach the terminal through the progress bar.
    logging.getLogger("PIL").addHandler(logging.NullHandler())
    if setup is not None:
        setup()
    if prepare is not None:
        _WORKER_PREPARE[:] = [prepare]


def _probe_in_worker(path: str, pixel_limit: int) -> Outcome:
    return probe(
        path, pixel_limit=pixel_limit, prepare=_WORKER_PREPARE[0] if _WORKER_PREPARE else None
    )


def crashed(cand: Candidate) -> ProbeProblem:
    return ProbeProblem(
        cand.path,
        CRASHED,
        "decoding this file ended its worker process (a decoder crash, or killed for "
        "memory); not retried until the file changes",
        cand.size,
        cand.mtime_ns,
    )


class ProbeRunner:
    """Probes candidates with ``workers`` processes (0: in this process, no isolation).

    `submit` and `drain` yield outcomes as they become due; the pool starts on the
    first file, so a rescan that finds nothing new starts no processes.
    """

    def __init__(
        self,
        workers: int,
        pixel_limit: int,
        setup: Callable[[], None] | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        self.workers = workers
        self.pixel_limit = pixel_limit
        self.setup = setup
        self.prepare = prepare  # see `probe`: what else to make of each decoded file
        self.crashes = 0
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: deque[tuple[Candidate, Future]] = deque()

    # --- the pool ----------------------------------------------------------------------

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = process_pool(
                self.workers, initializer=_init_worker, initargs=(self.setup, self.prepare)
            )
        return self._pool

    def _replace(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self, wait: bool = True) -> None:
        """Stop the workers; ``wait=False`` abandons files still in flight."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
        self._inflight.clear()

    # --- probing -----------------------------------------------------------------------

    def _submit(self, cand: Candidate) -> Future:
        return self._start().submit(_probe_in_worker, cand.path, self.pixel_limit)

    def submit(self, cand: Candidate) -> Iterator[Outcome]:
        if self.workers == 0:
            yield probe(cand.path, pixel_limit=self.pixel_limit, prepare=self.prepare)
            return
        try:
            future = self._submit(cand)
        except BrokenProcessPool:
            # A worker died since the last look: settle the files in flight first
            # (that replaces the pool), then submit to a working one.
            yield from self.drain()
            self._replace()
            future = self._submit(cand)
        self._inflight.append((cand, future))
        while len(self._inflight) > self.workers * IN_FLIGHT_PER_WORKER:
            yield from self._next()

    def drain(self) -> Iterator[Outcome]:
        while self._inflight:
            yield from self._next()

    def finished(self) -> Iterator[Outcome]:
        """Outcomes already computed, without waiting (to save them on an interrupt)."""
        for cand, future in self._inflight:
            if future.done() and not future.cancelled():
                outcome = self._outcome(cand, future)
                if outcome is not None:
                    yield outcome
        self._inflight.clear()

    def _outcome(self, cand: Candidate, future: Future) -> Outcome | None:
        """The future's outcome; None when the pool broke under it."""
        try:
            return future.result()
        except BrokenProcessPool:
            return None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - e.g. a result that cannot pickle
            return ProbeProblem(
                cand.path, failure_kind(exc), failure_message(exc), cand.size, cand.mtime_ns
            )

    def _next(self) -> Iterator[Outcome]:
        cand, future = self._inflight.popleft()
        outcome = self._outcome(cand, future)
        if outcome is not None:
            yield outcome
            return
        # The pool broke: every file in flight failed with it. Keep the outcomes that
        # had finished, then find the culprit by probing the rest one at a time.
        suspects = [cand]
        while self._inflight:
            other, other_future = self._inflight.popleft()
            other_outcome = self._outcome(other, other_future)
            if other_outcome is None:
                suspects.append(other)
            else:
                yield other_outcome
        self._replace()
        if len(suspects) == 1:  # alone in flight: no doubt which file it was
            self.crashes += 1
            yield crashed(cand)
            return
        for suspect in suspects:
            outcome = self._outcome(suspect, self._submit(suspect))
            if outcome is None:
                self.crashes += 1
                self._replace()
                yield crashed(suspect)
            else:
                yield outcome
