"""A fork waits for mixsql's background tasks, so a child never inherits a lock one of them held."""

from __future__ import annotations

import multiprocessing
import threading
import time

from mixsql import forksafe

_held = threading.Lock()


def _busy(started: threading.Event) -> None:
    with forksafe.task():
        with _held:  # what a lazy import or a decoder holds for a moment
            started.set()
            time.sleep(0.3)


def _child(out: "multiprocessing.Queue[bool]") -> None:
    out.put(_held.acquire(timeout=2))  # free: the fork happened after the task, not during it


def test_a_fork_waits_for_running_tasks_and_the_child_is_free() -> None:
    ctx = multiprocessing.get_context("fork")
    started = threading.Event()
    worker = threading.Thread(target=_busy, args=(started,))
    worker.start()
    started.wait(5)
    out: multiprocessing.Queue[bool] = ctx.Queue()
    began = time.monotonic()
    child = ctx.Process(target=_child, args=(out,))
    child.start()
    assert time.monotonic() - began >= 0.1  # the fork waited for the task
    child.join(10)
    worker.join()
    assert child.exitcode == 0 and out.get(timeout=5) is True
    with forksafe.task():  # and tasks run again afterwards
        pass
