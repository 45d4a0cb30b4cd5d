"""Compile-time work on a Ray cluster (``--ray [ADDRESS]``): registration's file scans and
tokenization's shards, a task per range of files, each writing its own output under a temporary
name in a directory every node sees; the driver checks what came back and commits as it does for
work done on its own cores. So a task that fails (its error names file and row), a task killed and
run again (Ray retries it; a part is only complete once renamed into place), or a driver killed
mid-way (its temporary directory is swept by the next writer) leaves the catalog as it was.

Ray is an extra (``pip install 'mixsql[ray]'``), imported here only. Nothing of the runtime imports
this module.
"""

from __future__ import annotations

import contextlib
import re
import socket
import typing as t

from mixsql.errors import MixSQLError

CONNECT_SECONDS = 10.0  # a cluster address must answer a TCP connection within this (ray.init would wait minutes)
TASK_RETRIES = 2  # a task whose worker or node died runs again this many times (an error in the data is not retried)
_ADDRESS = re.compile(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


def _ray() -> t.Any:
    try:
        import ray
    except ImportError:
        raise MixSQLError("--ray needs Ray, which is not installed", hint="pip install 'mixsql[ray]'") from None
    return ray


def check_address(address: str) -> str:
    """``address`` if it names a cluster: "" (the one ``RAY_ADDRESS`` names, else a new local one),
    ``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT``; else an error saying what is expected."""
    if not isinstance(address, str) or (address not in ("", "auto", "local") and not _ADDRESS.match(address)):
        raise MixSQLError(f"{address!r} is not a Ray cluster address",
                          hint="give HOST:PORT or ray://HOST:PORT (--ray=ADDRESS), or --ray alone for the cluster "
                               "RAY_ADDRESS names or a local one; on the command line put --ray after the paths")
    return address


def _probe(address: str) -> None:
    """A cluster address that does not answer is said at once, not after Ray's own long wait."""
    match = _ADDRESS.match(address)
    if match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        raise MixSQLError(f"the Ray cluster at {address} does not answer: {e.strerror or e}",
                          hint="check the address (the head node's GCS port, 6379 by default, or the Ray client's "
                               "ray://HOST:10001) and that the cluster is running: ray status") from None


@contextlib.contextmanager
def connected(address: str) -> t.Iterator[int]:
    """This process connected to the Ray cluster at ``address`` (``check_address``) for the block,
    which gets the cluster's CPUs. A connection the process already has is used and left open."""
    ray = _ray()
    check_address(address)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in ("", "auto", "local") and address.removeprefix("ray://") != current:
            raise MixSQLError(f"this process is already connected to the Ray cluster at {current}, not {address}",
                              hint="give that address, or --ray alone to use the connection this process has")
        yield _cpus(ray)
        return
    if address not in ("", "auto", "local"):
        _probe(address)
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MixSQLError(f"cannot connect to the Ray cluster{' at ' + address if address else ''}: {first}",
                          hint="check the address and that the cluster is running: ray status") from None
    try:
        yield _cpus(ray)
    finally:
        ray.shutdown()


def _cpus(ray: t.Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def run(function: t.Callable[..., t.Any], calls: t.Sequence[tuple[t.Any, ...]],
        done: t.Callable[[int], None] | None = None, what: str = "work") -> list[t.Any]:
    """``function(*call)`` for every call, each a Ray task on the connected cluster; their results
    in order (``done`` is told the index of each call as it finishes). The first failure in call
    order is raised as the error the task raised (a MixSQLError naming file and row stays one);
    the calls not yet done are then cancelled."""
    ray = _ray()
    task = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(function)
    refs = [task.remote(*call) for call in calls]
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    failed = False
    try:
        while pending and not failed:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    ray.get(ref)
                except Exception:  # noqa: BLE001 - said below, in call order
                    failed = True
                    continue
                if done is not None:
                    done(index[ref])
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    if not failed:
        return ray.get(refs)
    for ref in pending:
        ray.cancel(ref)
    for ref in refs:
        try:
            ray.get(ref)
        except Exception as e:  # noqa: BLE001
            error = _error(ray, e, what)
            if error is not None:
                raise error from None
    raise MixSQLError(f"a Ray task of {what} failed")  # pragma: no cover - a failure was seen above


def _error(ray: t.Any, e: BaseException, what: str) -> MixSQLError | None:
    """What a failed task says: its own MixSQLError, or one saying how it failed; None if it was
    only cancelled after another failed."""
    exceptions = ray.exceptions
    if isinstance(e, exceptions.TaskCancelledError):
        return None
    if isinstance(e, exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, (KeyboardInterrupt, exceptions.TaskCancelledError)):
            return None
        if isinstance(cause, MixSQLError):
            return cause
        text = str(cause if cause is not None else e).strip().splitlines()
        return MixSQLError(f"a Ray task of {what} failed: {text[-1] if text else type(e).__name__}",
                           hint="nothing was committed; fix the cause and run it again")
    return MixSQLError(f"a Ray task of {what} did not finish: {type(e).__name__}: {str(e).strip()[:300]}",
                       hint=f"its worker or node died {TASK_RETRIES + 1} times; nothing was committed, run it again")
