"""A scoring script under the Azure ML inference server (azmlinfsrv) on 127.0.0.1, and the HTTP client that
calls it: the local target's online endpoint. With a data collector (jobs/local/collector.py), the server's
score.py logs its inputs and outputs there, as an Azure deployment's does to its data collector sidecar."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from jobs.flow import SOURCE_DIR, FlowError
from jobs.local.prefork import ForkedProcess, Prefork

if TYPE_CHECKING:
    from jobs.local.collector import LocalCollector

SCORING_SCRIPT = SOURCE_DIR / "score.py"
LOG_TAIL_LINES = 25
SERVER_START_SECONDS = 120
# azmlinfsrv listens on 0.0.0.0 (right in a container); on a workstation keep the unauthenticated model local
LAUNCH_SERVER = (
    "import sys; from azureml_inference_server_http import amlserver; "
    "amlserver.DEFAULT_HOST = '127.0.0.1'; sys.argv[0] = 'azmlinfsrv'; amlserver.run()"
)
# what every scoring server imports, imported once by the prefork server that forks each server (skops first: its
# import walks every loaded module); only modules that read no per-process setting when imported (jobs/local/prefork.py)
SCORING_STACK = ("skops.io", "mlflow.models", "mlflow.sklearn", "lightgbm", "inference_schema.schema_decorators",
                 "flask", "flask_cors", "gunicorn.app.wsgiapp", "azureml_inference_server_http.amlserver")  # fmt: skip
PREFORK = Prefork(SCORING_STACK)
# what azureml-ai-monitoring's client reads (AZUREML_MDC_CONFIG_PATH, _HOST, _PORT, _ENABLED, ...): the server
# gets these from its collector only, never from the caller's own environment
COLLECTOR_VARIABLES = "AZUREML_MDC_"


class LocalServer:
    """A scoring script (score.py unless told) under azmlinfsrv on 127.0.0.1, in its own process group.

    `collector`: a started jobs.local.collector.LocalCollector (or the environment it gives): the server's
    score.py then collects its inputs and outputs there; without one, collection is off. The caller owns the
    collector: stop() leaves it running."""

    def __init__(self, model_dir: Path, port: int, log_path: Path, workers: int, script: Path = SCORING_SCRIPT,
                 collector: LocalCollector | Mapping[str, str] | None = None):  # fmt: skip
        self.model_dir, self.port, self.log_path, self.workers = model_dir, port or free_port(), log_path, workers
        self.script = Path(script).resolve()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ForkedProcess | subprocess.Popen | None = None
        environment = collector.environment() if hasattr(collector, "environment") else (collector or {})
        unknown = sorted(name for name in environment if not name.startswith(COLLECTOR_VARIABLES))
        if unknown:
            raise FlowError(f"the collector's environment has variables that are not {COLLECTOR_VARIABLES}*: {unknown}")
        self.collector_environment = dict(environment)

    def start(self) -> "LocalServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        inherited = {name: value for name, value in os.environ.items() if not name.startswith(COLLECTOR_VARIABLES)}
        env = {**inherited, "WORKER_COUNT": str(self.workers), "AML_APP_ROOT": str(self.script.parent),
               **self.collector_environment}  # fmt: skip
        arguments = ["--entry_script", str(self.script), "--model_dir", str(self.model_dir), "--port", str(self.port)]
        self.process = PREFORK.start(["-c", LAUNCH_SERVER, *arguments], self.script.parent, env, self.log_path)
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FlowError(f"the inference server exited with {self.process.returncode}:\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        self.stop()
        raise FlowError(f"the inference server was not healthy after {SERVER_START_SECONDS}s:\n{tail(self.log_path)}")

    def wait(self) -> int:
        return self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # gunicorn's master and its workers
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def invoke(scoring_uri: str, payload: dict, timeout: float = 30) -> list:
    """POST a request to a scoring URL; a non-2xx answer raises FlowError with the server's message."""
    request = urllib.request.Request(
        scoring_uri, json.dumps(payload).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise FlowError(f"{scoring_uri} answered {error.code}: {error.read().decode(errors='replace')}") from None
    except urllib.error.URLError as error:
        raise FlowError(f"{scoring_uri} is not reachable: {error.reason}") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
