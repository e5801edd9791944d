"""The local target's data collector: what Azure ML's model data collector (MDC) sidecar does for an online
deployment, on 127.0.0.1, writing the same files.

Why it exists. An Azure online deployment with `data_collector` collections `model_inputs` and
`model_outputs` runs a sidecar beside the scoring container; the scoring script logs pandas DataFrames with
`azureml.ai.monitoring.Collector`, whose client posts each one to the sidecar
(`http://$AZUREML_MDC_HOST:$AZUREML_MDC_PORT/modeldata/log`) from a background thread, and the sidecar writes
them to blob storage, one JSON object per line (learn.microsoft.com/azure/machine-learning/
how-to-collect-production-data, "Collect production data", "Store collected data in a blob"):

    azureml://datastores/workspaceblobstore/paths/modelDataCollector/
        {endpoint_name}/{deployment_name}/{collection_name}/{yyyy}/{MM}/{dd}/{HH}/{instance_id}.jsonl

    {"specversion":"1.0","id":"<payload id>","source":"/subscriptions/.../onlineEndpoints/<e>/deployments/<d>",
     "type":"azureml.inference.<collection>","datacontenttype":"application/json","time":"2022-12-01T08:51:30Z",
     "data":[{<column>: <value>, ...}, ...],"correlationid":"<id>","xrequestid":"<id>","modelversion":"default",
     "collectdatatype":"pandas.core.frame.DataFrame","agent":"monitoring-sdk/0.1.2","contentrange":"bytes 0-116/117"}

The sidecar is not public, so the local target cannot run it. This class answers the same client on the same
protocol (the headers azureml-ai-monitoring 1.0.0's `MdcSender` sends, the config file its `loadConfig` reads)
and writes the same layout and schema under a local folder, so one monitor reads either target's data. Azure
batches payloads that arrive close together into one object (`data` then holds several payloads' rows);
this writes one object per payload, which a reader of Azure's files takes as well (score.py's payloads are
themselves batches of the requests of half a second: scoring.DataCollection).

    collector = LocalCollector(Collection(root, "local-housing", "blue")).start()
    server = LocalServer(model_dir, 0, log, workers, collector=collector).start()   # jobs/local/server.py
    ...                                       # requests to the server; its score.py collects
    collector.wait_for_rows("model_inputs", 10)   # the client posts from a background thread
    server.stop(); collector.close()

Run alone (`python -m jobs.local.collector --root DIR --endpoint E --deployment D`), it prints its environment
as one JSON line and serves until its standard input closes: a collector in its own process, as the sidecar is
(benchmarks/serving.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

# the collections an online deployment's data_collector turns on (jobs/specs/endpoints/*-deployment.yml) and
# score.py logs
COLLECTIONS = ("model_inputs", "model_outputs")
LOG_PATH = "/modeldata/log"
EVENT_TYPE_PREFIX = "azureml.inference."
# a collection or an endpoint/deployment name becomes a folder name: nothing that could climb out of the root
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# <collection>/yyyy/MM/dd/HH under a deployment's folder
HOUR_PARTS = (re.compile(r"^\d{4}$"), re.compile(r"^\d{2}$"), re.compile(r"^\d{2}$"), re.compile(r"^\d{2}$"))
MAX_BODY_BYTES = 64 * 1024 * 1024  # a request of score.py's row limit is far below this

Report = Callable[[str], None]


class CollectorError(ValueError):
    """A setting of the local data collector is wrong; the message names it."""


@dataclass(frozen=True)
class Collection:
    """Where and how much a local online deployment collects.

    root: the folder that stands for `modelDataCollector/` (files go to <root>/<endpoint>/<deployment>/...);
    sampling_rate: the share of requests collected, 0 to 1, per collection (the client samples, as Azure's
    `sampling_rate`); keep_days: on start, delete hour folders whose hour ended more than this many days ago
    under <root>/<endpoint>/ (None keeps everything)."""

    root: Path
    endpoint: str
    deployment: str
    sampling_rate: float = 1.0
    keep_days: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        for field in ("endpoint", "deployment"):
            value = getattr(self, field)
            if not isinstance(value, str) or not NAME.match(value) or value in (".", ".."):
                raise CollectorError(
                    f"data collection: {field} {value!r} is not a folder name (letters, digits, '_', '.', '-'; "
                    "starting with a letter or digit)"
                )
        rate = self.sampling_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise CollectorError(f"data collection: sampling_rate must be a number from 0 to 1, not {rate!r}")
        days = self.keep_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise CollectorError(f"data collection: keep_days must be a whole number of days >= 1 (or None), not {days!r}")

    @property
    def folder(self) -> Path:
        """<root>/<endpoint>/<deployment>: one folder per collection below it."""
        return self.root / self.endpoint / self.deployment

    @property
    def sample_rate_percentage(self) -> int:
        return round(self.sampling_rate * 100)


@dataclass(frozen=True)
class Written:
    """What a collector wrote for one collection: rows (records) and objects (lines)."""

    rows: int = 0
    objects: int = 0


class LocalCollector:
    """The sidecar's stand-in: an HTTP server on 127.0.0.1 (a free port, in a daemon thread of this process)
    that takes `POST /modeldata/log` from azureml-ai-monitoring's client and appends each payload as one line
    to <root>/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/<instance_id>.jsonl.

    One instance id per collector (Azure: per deployment instance), so one file per collection per hour. The
    caller owns it: start() before the scoring server, close() after it."""

    def __init__(self, settings: Collection, report: Report | None = None):
        self.settings = settings
        self.report = report or (lambda message: None)
        self.instance_id = str(uuid.uuid4())
        self.deleted: list[Path] = []  # hour folders the retention removed on start
        self._server: ThreadingHTTPServer | None = None
        self._config_dir: Path | None = None
        self._lock = threading.Condition()
        self._written: dict[str, Written] = {}
        self._files: dict[str, tuple[Path, int]] = {}  # collection -> (the hour's file, its descriptor)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, now: datetime | None = None) -> LocalCollector:
        """Apply the retention, write the client's config file, start serving. Returns self."""
        if self._server is not None:
            raise CollectorError("data collection: this collector is already started")
        settings = self.settings
        if settings.keep_days is not None:
            self.deleted = purge(settings.root / settings.endpoint, settings.keep_days, now)
            if self.deleted:
                shown = ", ".join(str(path.relative_to(settings.root)) for path in self.deleted[:10])
                more = f" and {len(self.deleted) - 10} more" if len(self.deleted) > 10 else ""
                self.report(
                    f"data collection: deleted {len(self.deleted)} hour folder(s) older than {settings.keep_days} "
                    f"day(s) under {settings.root / settings.endpoint}: {shown}{more}"
                )
        settings.folder.mkdir(parents=True, exist_ok=True)
        self._config_dir = Path(tempfile.mkdtemp(prefix="mdc-config-"))
        config = {
            "runMode": "cloud",  # "local" makes the client log the data instead of posting it
            "collections": {
                name: {"enabled": True, "sampleRatePercentage": settings.sample_rate_percentage} for name in COLLECTIONS
            },
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.collector = self
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-mdc", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop serving and close the files; the written files stay. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            for _, descriptor in self._files.values():
                os.close(descriptor)
            self._files.clear()
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None

    def __enter__(self) -> LocalCollector:
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the scoring server needs --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise CollectorError("data collection: the collector is not started (call start())")
        return self._server.server_port

    @property
    def config_path(self) -> Path:
        if self._config_dir is None:
            raise CollectorError("data collection: the collector is not started (call start())")
        return self._config_dir / "mdc-config.json"

    def environment(self) -> dict[str, str]:
        """The variables that point the scoring server's Collector here (what Azure sets in the container)."""
        return {"AZUREML_MDC_CONFIG_PATH": str(self.config_path), "AZUREML_MDC_HOST": "127.0.0.1",
                "AZUREML_MDC_PORT": str(self.port)}  # fmt: skip

    # -- what it wrote ------------------------------------------------------------------------------------

    def written(self, collection: str) -> Written:
        with self._lock:
            return self._written.get(collection, Written())

    def wait_for_rows(self, collection: str, rows: int, timeout_s: float = 30.0) -> Written:
        """Block until at least `rows` rows of `collection` are on disk; TimeoutError naming what is missing."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._written.get(collection, Written()).rows < rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = self._written.get(collection, Written())
                    raise TimeoutError(
                        f"data collection: {collection} has {got.rows} of {rows} row(s) on disk after {timeout_s:g}s "
                        f"(in {self.settings.folder / collection})"
                    )
                self._lock.wait(left)
            return self._written[collection]

    def files(self, collection: str) -> list[Path]:
        """The collection's .jsonl files, oldest hour first."""
        return sorted((self.settings.folder / collection).glob("*/*/*/*/*.jsonl"))

    # -- the sidecar's side of the protocol -----------------------------------------------------------------

    def write(self, headers, body: bytes) -> Written:
        """One payload from the client -> one line. CollectorError (a 400) names what is wrong with it."""
        event_type = headers.get("ce-type")
        if not event_type:
            raise CollectorError("missing header ce-type (azureml.inference.<collection>)")
        if not event_type.startswith(EVENT_TYPE_PREFIX) or not NAME.match(event_type[len(EVENT_TYPE_PREFIX) :]):
            raise CollectorError(f"header ce-type {event_type!r} is not azureml.inference.<collection>")
        collection = event_type[len(EVENT_TYPE_PREFIX) :]
        try:
            records = json.loads(body)
        except (UnicodeDecodeError, ValueError) as error:
            raise CollectorError(f"body is not JSON ({error}); expected JSON records, a list of objects") from None
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            raise CollectorError("body is not JSON records: expected a list of objects (to_json(orient='records'))")
        stamp = headers.get("ce-time")
        try:
            moment = datetime.fromtimestamp(int(stamp), timezone.utc) if stamp else datetime.now(timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise CollectorError(f"header ce-time {stamp!r} is not a time in epoch seconds") from None
        settings = self.settings
        correlation = headers.get("ce-x-request-id")
        line = {
            "specversion": "1.0",
            "id": headers.get("trace-id") or str(uuid.uuid4()),
            "source": f"/local/onlineEndpoints/{settings.endpoint}/deployments/{settings.deployment}",
            "type": event_type,
            "datacontenttype": headers.get("Content-Type") or "application/json",
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": records,
            "correlationid": correlation,
            "xrequestid": correlation,
            "modelversion": headers.get("ce-model-version") or "default",
            "collectdatatype": headers.get("ce-collect-data-type"),
            "agent": headers.get("ce-agent"),
            "contentrange": f"bytes 0-{len(body) - 1}/{len(body)}",
        }
        data = (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        path = settings.folder / collection / moment.strftime("%Y/%m/%d/%H") / f"{self.instance_id}.jsonl"
        with self._lock:
            if self._server is None:
                raise CollectorError("the collector is closed")
            descriptor = self._descriptor(collection, path)
            view = memoryview(data)
            while view:  # one write() in practice: the whole line, with its newline, or nothing
                view = view[os.write(descriptor, view) :]
            before = self._written.get(collection, Written())
            self._written[collection] = now = Written(before.rows + len(records), before.objects + 1)
            self._lock.notify_all()
        return now

    def _descriptor(self, collection: str, path: Path) -> int:
        open_file = self._files.get(collection)
        if open_file is not None and open_file[0] == path:
            return open_file[1]
        if open_file is not None:  # a new hour
            os.close(open_file[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._files[collection] = (path, descriptor)
        return descriptor


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # a client that keeps its connection gets to; Content-Length ends each answer
    disable_nagle_algorithm = True

    def do_POST(self):  # noqa: N802 (http.server's name)
        if self.path.split("?")[0] != LOG_PATH:
            self._drain()
            return self._answer(404, f"not found: POST {self.path} (the data collector takes POST {LOG_PATH})")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return self._answer(411, "Content-Length is required")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            return self._answer(413, f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}")
        body = self.rfile.read(int(length))
        try:
            self.server.collector.write(self.headers, body)
        except CollectorError as problem:
            return self._answer(400, str(problem))
        self._answer(200, "")

    def do_GET(self):  # noqa: N802
        self._answer(404, f"not found: GET {self.path} (the data collector takes POST {LOG_PATH})")

    do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    def _drain(self):
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_BODY_BYTES:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _answer(self, status: int, message: str):
        data = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # one line per payload would bury the caller's output
        pass


def purge(endpoint_folder: Path, keep_days: int, now: datetime | None = None) -> list[Path]:
    """Delete the hour folders (<deployment>/<collection>/yyyy/MM/dd/HH) under an endpoint's folder whose hour
    ended more than `keep_days` days before `now` (UTC), then the day, month and year folders left empty.
    Anything that is not an hour folder of that layout is left alone. Returns the deleted hour folders."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=keep_days)
    deleted = []
    if not endpoint_folder.is_dir():
        return deleted
    for collection in sorted(path for path in endpoint_folder.glob("*/*") if path.is_dir()):
        for hour in sorted(collection.glob("*/*/*/*")):
            parts = hour.relative_to(collection).parts
            if not hour.is_dir() or not all(pattern.match(part) for pattern, part in zip(HOUR_PARTS, parts)):
                continue
            try:
                start = datetime(*map(int, parts), tzinfo=timezone.utc)
            except ValueError:  # 2024/13/..: not a date, not ours
                continue
            if start + timedelta(hours=1) <= cutoff:
                shutil.rmtree(hour)
                deleted.append(hour)
        for folder in sorted({path.parent for path in deleted if collection in path.parents}, reverse=True):
            for emptied in (folder, folder.parent, folder.parent.parent):  # dd, MM, yyyy
                if emptied == collection or any(emptied.iterdir()):
                    break
                emptied.rmdir()
    return deleted


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a local data collector until standard input closes.")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--sampling-rate", type=float, default=1.0)
    parser.add_argument("--keep-days", type=int)
    args = parser.parse_args(argv)
    settings = Collection(args.root, args.endpoint, args.deployment, args.sampling_rate, args.keep_days)
    with LocalCollector(settings, lambda message: print(message, file=sys.stderr)) as collector:
        print(json.dumps(collector.environment()), flush=True)
        sys.stdin.read()
        written = {name: collector.written(name).__dict__ for name in COLLECTIONS}
    print(json.dumps(written), flush=True)


if __name__ == "__main__":
    main()
