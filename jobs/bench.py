"""A load test of a scoring endpoint (`python -m jobs bench`): client threads, each on one keep-alive HTTP
connection, POST the same request one after another until the request count or the time limit, whichever
comes first (Ctrl-C stops it sooner and keeps what was measured). It reports requests/s, rows/s, the latency
percentiles of the successful answers and the errors by HTTP status, with timeouts and connection errors
under their own labels.

It knows a URL, headers and a body, not targets: jobs/cli.py gets the URL (and, in Azure, the key) from the
target. The headers may hold a key: nothing here prints them.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import TextIO
from urllib.parse import urlsplit

from jobs.flow import SPECS_DIR, FlowError
from jobs.workloads import load_yaml

# a run is bounded by default: whichever of these comes first
REQUESTS = 1000
DURATION_S = 60.0
# our managed deployment's max_concurrent_requests_per_instance (jobs/specs/endpoints/managed-deployment.yml);
# Azure answers 429 beyond 2 x that x instance_count requests in flight (how-to-troubleshoot-online-endpoints)
CONCURRENCY = 4
# Azure answers 408 itself after the deployment's request_timeout_ms (5 s in our specs; 408 in
# how-to-troubleshoot-online-endpoints); a local server has no such limit, so the client's own keeps one stuck
# request from holding the run
REQUEST_TIMEOUT_S = 30.0
REDRAW_S = 0.25  # the progress bar is redrawn at most four times a second
BAR_WIDTH = 30
PLAIN_STEPS = 10  # not on a terminal (a CI log): one line per tenth of the run
TIMEOUT, CONNECTION_ERROR = "timeout", "connection error"
STOPPED_BY_COUNT, STOPPED_BY_TIME, STOPPED_BY_CTRL_C = "request count reached", "time limit reached", "Ctrl-C"


def payload(request: dict, rows: int) -> bytes:
    """The request with its records cycled to `rows` records, encoded once, so that the clients' time goes to
    the endpoint, not to JSON."""
    records = request["data"]
    return json.dumps({**request, "data": [records[i % len(records)] for i in range(rows)]}).encode()


def too_many_rows(rows: int, kind: str) -> str | None:
    """A note when `rows` exceeds the SCORE_MAX_ROWS that the `kind` online deployment's spec gives score.py,
    which answers a larger request with a 400."""
    spec = SPECS_DIR / "endpoints" / f"{kind}-deployment.yml"
    limit = (load_yaml(spec.read_text()).get("environment_variables") or {}).get("SCORE_MAX_ROWS")
    if limit is None or rows <= int(limit):
        return None
    return (f"note: {rows:,} rows per request exceed SCORE_MAX_ROWS={limit} of the {kind} deployment ({spec}): "
            f"score.py answers such requests with a 400 (a batch endpoint is for larger inputs)")  # fmt: skip


@dataclass(frozen=True)
class Result:
    rows: int  # per request
    elapsed_s: float
    latencies_s: tuple[float, ...]  # of the successful (2xx) answers, sorted
    errors: Counter  # HTTP status (int), TIMEOUT or CONNECTION_ERROR -> count
    stopped_by: str

    @property
    def succeeded(self) -> int:
        return len(self.latencies_s)

    @property
    def requests(self) -> int:
        return self.succeeded + sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / max(self.elapsed_s, 1e-9)

    @property
    def rows_per_s(self) -> float:
        """Of the successful answers."""
        return self.succeeded * self.rows / max(self.elapsed_s, 1e-9)

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == STOPPED_BY_CTRL_C

    def percentile_ms(self, percent: float) -> float | None:
        """Nearest rank: the smallest latency that `percent` % of the successful answers do not exceed."""
        if not self.latencies_s:
            return None
        rank = math.ceil(percent * len(self.latencies_s) / 100)
        return 1e3 * self.latencies_s[rank - 1]

    def report(self) -> str:
        latency = ", ".join(
            f"p{p} {value:,.1f} ms" if (value := self.percentile_ms(p)) is not None else f"p{p} -" for p in (50, 95, 99)
        )
        # HTTP statuses first, in order, then the timeouts and connection errors
        ordered = sorted(self.errors.items(), key=lambda item: (isinstance(item[0], str), str(item[0])))
        errors = ", ".join(f"{_label(outcome)}: {count:,}" for outcome, count in ordered)
        return "\n".join([
            f"requests:   {self.requests:,} in {self.elapsed_s:.2f} s ({self.stopped_by}), {self.succeeded:,} successful",
            f"requests/s: {self.requests_per_s:,.1f}",
            f"rows/s:     {self.rows_per_s:,.1f} ({self.rows:,} rows per request, successful answers)",
            f"latency:    {latency} (successful answers)",
            f"errors:     {errors or 'none'}",
        ])  # fmt: skip


def _label(outcome: int | str) -> str:
    if isinstance(outcome, int):
        try:
            return f"{outcome} {HTTPStatus(outcome).phrase}"
        except ValueError:  # a status code the standard library does not name
            return str(outcome)
    return outcome


class _Tally:
    """What the client threads measured so far; also hands out the request count, one request at a time."""

    def __init__(self, requests: int):
        self.left, self.done, self.failed = requests, 0, 0
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left == 0:
                return False
            self.left -= 1
            return True

    def record(self, outcome: int | str, seconds: float) -> None:
        with self.lock:
            self.done += 1
            if isinstance(outcome, int) and 200 <= outcome < 300:
                self.latencies.append(seconds)
            else:
                self.failed += 1
                self.errors[outcome] += 1

    def snapshot(self) -> tuple[tuple[float, ...], Counter]:
        with self.lock:
            return tuple(sorted(self.latencies)), Counter(self.errors)


class Progress:
    """The run's progress on `stream`: on a terminal a bar redrawn in place at most every REDRAW_S, elsewhere
    a plain line per tenth of the run (requests or time, whichever is further along)."""

    def __init__(self, stream: TextIO, requests: int, duration_s: float):
        self.stream, self.requests, self.duration_s = stream, requests, duration_s
        self.terminal = stream.isatty()
        self.drawn_at = -math.inf
        self.steps_shown = 0

    def draw(self, done: int, failed: int, elapsed_s: float, final: bool = False) -> None:
        share = min(1.0, max(done / self.requests, elapsed_s / self.duration_s))
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        status = f"{done:,}/{self.requests:,} requests  {elapsed_s:.1f}/{self.duration_s:g} s  {rate:,.0f}/s  {failed:,} errors"
        if self.terminal:
            now = time.monotonic()
            if final or now - self.drawn_at >= REDRAW_S:
                self.drawn_at = now
                filled = int(share * BAR_WIDTH)
                self.stream.write(f"\r[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {status}" + ("\n" if final else ""))
                self.stream.flush()
            return
        step = int(share * PLAIN_STEPS)
        if step > self.steps_shown or (final and step < PLAIN_STEPS):
            self.steps_shown = step
            self.stream.write(f"{share:4.0%}  {status}\n")
            self.stream.flush()


def run(
    url: str,
    headers: dict[str, str],
    body: bytes,
    rows: int,
    concurrency: int = CONCURRENCY,
    requests: int = REQUESTS,
    duration_s: float = DURATION_S,
    timeout_s: float = REQUEST_TIMEOUT_S,
    progress: TextIO | None = None,
) -> Result:
    """POST `body` (`rows` records) to `url` from `concurrency` threads until `requests` were answered or
    `duration_s` passed (requests in flight then finish); Ctrl-C returns what was measured until then."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FlowError(f"not an http(s) URL: {url}")
    connect = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", **headers}
    tally, stop = _Tally(requests), threading.Event()
    started = time.perf_counter()
    deadline = started + duration_s

    def client() -> None:
        connection = None
        try:
            while not stop.is_set() and time.perf_counter() < deadline and tally.take():
                # one connection per thread, reused while the server keeps it open (http.client opens a new one
                # after a `Connection: close` answer): no TCP and TLS handshake per request
                connection = connection or connect(parts.hostname, parts.port, timeout=timeout_s)
                sent = time.perf_counter()
                try:
                    connection.request("POST", path, body, headers)
                    answer = connection.getresponse()
                    answer.read()
                    outcome = answer.status
                except TimeoutError:
                    outcome = TIMEOUT
                except (OSError, http.client.HTTPException):
                    outcome = CONNECTION_ERROR
                if not isinstance(outcome, int):  # the connection's state is unknown: the next request opens a new one
                    connection.close()
                    connection = None
                tally.record(outcome, time.perf_counter() - sent)
        finally:
            if connection is not None:
                connection.close()

    bar = Progress(progress, requests, duration_s) if progress else None
    threads = [threading.Thread(target=client, name=f"bench-client-{n}", daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    stopped_by = None
    try:
        while alive := [thread for thread in threads if thread.is_alive()]:
            alive[0].join(REDRAW_S)
            if bar:
                bar.draw(tally.done, tally.failed, time.perf_counter() - started)
    except KeyboardInterrupt:
        # the requests in flight are left to finish on their own (daemon threads); they are not counted
        stop.set()
        stopped_by = STOPPED_BY_CTRL_C
    elapsed = time.perf_counter() - started
    if stopped_by is None:
        stopped_by = STOPPED_BY_COUNT if tally.left == 0 else STOPPED_BY_TIME
    result = Result(rows, elapsed, *tally.snapshot(), stopped_by)
    if bar:
        bar.draw(result.requests, result.requests - result.succeeded, elapsed, final=True)
    return result
