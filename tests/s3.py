"""A real S3-compatible server on loopback for tests and benchmarks: moto's standalone server in a
subprocess, and a proxy in front of it that adds latency to, or fails, a fraction of requests.

    with S3Server() as server:                  # http://127.0.0.1:PORT
        server.upload(SAMPLE / "parquet", "bucket", "parquet")
        with Proxy(server.endpoint, delay=0.05, fail=0.1) as proxy:
            ...  storage_options=server.options(proxy.endpoint)

Run as a script, this module is the proxy: ``python tests/s3.py TARGET PORT DELAY FAIL SEED``.
"""

from __future__ import annotations

import http.client
import json
import http.server
import os
import random
import socket
import subprocess
import sys
import threading
import time
import typing as t
import urllib.request
from pathlib import Path

KEY = "mixsql-test-key"
SECRET = "mixsql-test-secret-never-in-an-artefact-7c1f"  # tests look for this string in every output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within 60 s")


class S3Server:
    """moto's S3 server on 127.0.0.1 in a subprocess, for the duration of a ``with``."""

    def __init__(self, *, auth: bool = False) -> None:
        self.auth = auth  # check credentials (moto then knows none: every request is refused)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "S3Server":
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _wait(self.endpoint + "/moto-api/", self._proc, "moto's S3 server")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def options(self, endpoint: str | None = None, **extra: t.Any) -> dict[str, t.Any]:
        """Storage options reaching this server (or a proxy in front of it)."""
        return {"key": KEY, "secret": SECRET, "endpoint_url": endpoint or self.endpoint, **extra}

    def filesystem(self) -> t.Any:
        import s3fs

        return s3fs.S3FileSystem(**self.options(), skip_instance_cache=True)

    def upload(self, local: Path, bucket: str, prefix: str) -> None:
        fs = self.filesystem()
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        paths = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for path in paths:  # a file goes to the key ``prefix``, a directory's files under it
            key = prefix if local.is_file() else f"{prefix}/{path.relative_to(local).as_posix()}"
            fs.put_file(str(path), f"{bucket}/{key}")


class Proxy:
    """A proxy in front of ``target`` (a subprocess): every request waits ``delay`` seconds, and a
    fraction ``fail`` of them fail (alternately a 503 and a reset connection)."""

    def __init__(self, target: str, *, delay: float = 0.0, fail: float = 0.0, seed: int = 0) -> None:
        self.target, self.delay, self.fail, self.seed = target, delay, fail, seed
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Proxy":
        self._proc = subprocess.Popen([sys.executable, __file__, self.target, str(self.port), str(self.delay),
                                       str(self.fail), str(self.seed)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        _wait(self.endpoint + "/__proxy__", self._proc, "the S3 proxy")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)

    def stats(self) -> dict[str, int]:
        """Requests served and failed, and body bytes sent, so far."""
        with urllib.request.urlopen(self.endpoint + "/__proxy__", timeout=5) as reply:
            return json.loads(reply.read())


def _serve(target: str, port: int, delay: float, fail: float, seed: int) -> None:
    host, _, tport = target.split("://", 1)[1].partition(":")
    rng = random.Random(seed)
    lock = threading.Lock()
    served, failed, sent = [0], [0], [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: t.Any) -> None:
            pass

        def _forward(self) -> None:
            if self.path == "/__proxy__":
                with lock:
                    payload = json.dumps({"served": served[0], "failed": failed[0], "bytes": sent[0]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with lock:
                served[0] += 1
                failing = rng.random() < fail
                failed[0] += failing
                reset = failing and served[0] % 2 == 0
            if delay:
                time.sleep(delay)
            if reset:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if failing:
                payload = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(host, int(tport), timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(self.command, self.path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            self.send_response(reply.status, reply.reason)
            for k, v in reply.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            size = reply.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", size or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
                with lock:
                    sent[0] += len(data)
            conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
