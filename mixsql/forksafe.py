"""Background work that a fork waits for: a process never forks while one of mixsql's threads is
inside a task (a refit, a read-ahead decode or fetch).

A forked child (a DataLoader worker) inherits every lock a running thread holds at that moment,
such as a module's import lock in the middle of a lazy import, or a decoder's own mutex, and would
wait on it for ever. ``task()`` marks such work; ``os.register_at_fork`` makes a fork wait until
no task runs, and holds new ones back until it is done.
"""

from __future__ import annotations

import contextlib
import os
import threading
import typing as t

_cond = threading.Condition()
_active = 0
_forking = False


@contextlib.contextmanager
def task() -> t.Iterator[None]:
    """Run the body as work a fork waits for."""
    global _active
    with _cond:
        while _forking:
            _cond.wait()
        _active += 1
    try:
        yield
    finally:
        with _cond:
            _active -= 1
            _cond.notify_all()


def _before_fork() -> None:
    global _forking
    _cond.acquire()
    _forking = True
    while _active:
        _cond.wait()


def _after_fork_in_parent() -> None:
    global _forking
    _forking = False
    _cond.notify_all()
    _cond.release()


def _after_fork_in_child() -> None:
    global _cond, _active, _forking
    _cond, _active, _forking = threading.Condition(), 0, False  # no thread of the parent runs here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
