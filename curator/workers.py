"""Worker process pools that never outlive the process that started them.

Decoding runs in ``forkserver`` pools (fork is unsafe beside onnxruntime's and
SQLite's threads). A worker's parent is the fork server, not the caller, so a
``kill -9`` of the caller would leave the pool running; every worker therefore
watches the caller's pid and exits as soon as it is gone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

_WATCH_SECONDS = 1.0


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(_WATCH_SECONDS)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # a pid reused by another user's process: the caller is gone
            os._exit(1)


def _init_worker(
    parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> None:
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A forkserver pool of ``workers`` processes that exit when this process dies."""
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("forkserver"),
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
