"""`python -m jobs bench` against a stand-in scoring server on 127.0.0.1 (tests/local_server.py) whose answers
and delays each test scripts: the request count, the time limit, keep-alive connections, latency percentiles
from known delays, errors by status, rows per request, the progress bar and Ctrl-C; then the local target's
server and the Azure endpoints of the fake workspace, whose key is sent and never printed."""

from __future__ import annotations

import _thread
import io
import itertools
import json
import re
import signal
import threading
import time
from collections import Counter

import pytest
import yaml

from jobs import bench, cli
from jobs.azure import entities
from jobs.bench import CONNECTION_ERROR, TIMEOUT, Progress, Result
from jobs.flow import SPECS_DIR, Endpoint, RegisteredModel
from jobs.local.server import free_port
from jobs.local.target import LocalTarget
from tests.azure_fake import FakeWorkspace, arm_error
from tests.local_server import LocalServer
from tests.test_azure_cli import use, write_outputs
from tests.test_azure_stage import BANK, HOUSING, OUTPUTS, endpoint

RECORDS = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
BODY = bench.payload({"data": RECORDS}, 2)


def scripted(*answers: tuple[float, int]):
    """An `answer` that plays (delay in seconds, status) in turn, cycling: the nth request to arrive gets the
    nth (itertools.count hands out each number once, whatever thread asks)."""
    arrivals = itertools.count()

    def answer(server):
        delay, status = answers[next(arrivals) % len(answers)]
        time.sleep(delay)
        return status, "application/json", "[0.5]"

    return answer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_payload_cycles_the_sample_records_to_the_rows_asked():
    assert json.loads(bench.payload({"data": RECORDS}, 7)) == {"data": RECORDS + RECORDS + RECORDS[:1]}
    assert json.loads(bench.payload({"data": RECORDS}, 2)) == {"data": RECORDS[:2]}


def test_it_stops_at_the_request_count_on_one_kept_alive_connection_per_client():
    with LocalServer(scripted((0, 200))) as server:
        result = bench.run(server.url + "/score", {}, BODY, 2, concurrency=3, requests=50, duration_s=30)
    assert result.stopped_by == bench.STOPPED_BY_COUNT
    assert result.requests == result.succeeded == len(server.requests) == 50 and not result.errors
    assert len(server.connections) <= 3  # a connection per client (a client starting late may find none left)
    assert {path for path, _ in server.requests} == {"/score"}
    assert [json.loads(body) for body in server.bodies] == [{"data": RECORDS[:2]}] * 50


def test_latency_percentiles_come_from_the_answers_delays():
    # 100 answers, their delays in classes: 40 after 5 ms, 20 after 200 ms, 31 after 350 ms, 6 after 600 ms and 3
    # after 1.2 s. The nearest rank puts p50 on the 50th fastest, in the middle of the 200 ms class (ranks 41-60), p95
    # on the 95th, inside the 600 ms class (92-97), and p99 on the 99th, inside the 1.2 s class (98-100), whatever the
    # arrival order. Each percentile's rank has answers of its own class on both sides, so a busy machine's extra
    # milliseconds (the suite runs on every core; in fresh clones' CI runs a 5 ms answer once took 50 ms, and a
    # 200 ms one over 500 ms) move it into the next class only if several answers of its class are that late.
    # (The exact nearest-rank arithmetic: the test below.)
    delays = [(0.005, 200)] * 40 + [(0.2, 200)] * 20 + [(0.35, 200)] * 31 + [(0.6, 200)] * 6 + [(1.2, 200)] * 3
    with LocalServer(scripted(*delays)) as server:
        result = bench.run(server.url, {}, BODY, 2, concurrency=8, requests=100, duration_s=30)
    assert result.succeeded == 100 and not result.errors
    assert 200 <= result.percentile_ms(50) < 350
    assert 600 <= result.percentile_ms(95) < 1200
    assert 1200 <= result.percentile_ms(99) < 2400


def test_percentiles_are_nearest_ranks_of_the_successful_answers():
    hundred = Result(1, 1.0, tuple(n / 1e3 for n in range(1, 101)), Counter(), bench.STOPPED_BY_COUNT)
    assert [hundred.percentile_ms(p) for p in (50, 95, 99)] == pytest.approx([50, 95, 99])
    one = Result(1, 1.0, (0.007,), Counter({503: 4}), bench.STOPPED_BY_COUNT)
    assert one.percentile_ms(50) == one.percentile_ms(99) == pytest.approx(7)
    none = Result(1, 1.0, (), Counter({503: 4}), bench.STOPPED_BY_COUNT)
    assert none.percentile_ms(50) is None and "latency:    p50 -, p95 -, p99 -" in none.report()


def test_it_stops_at_the_time_limit_with_every_client_busy():
    with LocalServer(scripted((0.05, 200))) as server:
        result = bench.run(server.url, {}, BODY, 2, concurrency=2, requests=10_000, duration_s=0.5)
    assert result.stopped_by == bench.STOPPED_BY_TIME
    # no request starts after the limit; the one each client has in flight then finishes (50 ms)
    assert 0.5 <= result.elapsed_s < 1.0
    # one client alone answers at most 10 in 0.5 s; two, each with one more in flight at the limit, at most 22
    assert 10 < result.requests == len(server.requests) <= 22


def test_errors_are_counted_by_status_with_timeouts_and_connection_errors_apart():
    with LocalServer(scripted((0, 200), (0, 400), (0, 503), (1.0, 200))) as server:
        result = bench.run(server.url, {}, BODY, 2, concurrency=2, requests=8, duration_s=30, timeout_s=0.3)
    assert result.errors == {400: 2, 503: 2, TIMEOUT: 2} and result.succeeded == 2
    assert "errors:     400 Bad Request: 2, 503 Service Unavailable: 2, timeout: 2" in result.report()

    nowhere = bench.run(f"http://127.0.0.1:{free_port()}/score", {}, BODY, 2, concurrency=2, requests=5, duration_s=30)
    assert nowhere.errors == {CONNECTION_ERROR: 5} and nowhere.succeeded == 0


def test_the_progress_bar_is_redrawn_a_few_times_a_second_on_a_terminal_and_plain_elsewhere():
    terminal = Terminal()
    bar = Progress(terminal, requests=100, duration_s=60)
    for done in range(1, 101):  # far quicker than a redraw interval
        bar.draw(done, 0, 0.5)
    bar.draw(100, 1, 0.8, final=True)
    assert terminal.getvalue().count("\r") == 2  # the first draw and the final one
    assert terminal.getvalue().endswith(f"\r[{'#' * bench.BAR_WIDTH}] 100/100 requests  0.8/60 s  125/s  1 errors\n")

    log = io.StringIO()
    plain = Progress(log, requests=1000, duration_s=60)
    for done in range(0, 1001, 5):
        plain.draw(done, 0, 1.0)
    plain.draw(1000, 0, 1.0, final=True)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == bench.PLAIN_STEPS
    assert lines[0].startswith(" 10%  100/1,000 requests") and lines[-1].startswith("100%  1,000/1,000 requests")


def test_bench_posts_the_workloads_sample_cycled_to_the_rows_asked(capsys):
    with LocalServer(scripted((0, 200))) as server:
        code = cli.main(["bench", "--local", "--workload", "bank-marketing", "--url", server.url + "/score",
                         "--requests", "12", "--concurrency", "2", "--rows", "5"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    records = BANK.request()["data"]
    assert [json.loads(body) for body in server.bodies] == [{"data": (records * 5)[:5]}] * 12
    assert "requests:   12 in" in out and "12 successful" in out and "rows/s:" in out and "errors:     none" in out
    assert "100%  12/12 requests" in err and "SCORE_MAX_ROWS" not in err


def test_rows_above_the_deployments_limit_are_pointed_out(capsys):
    spec = SPECS_DIR / "endpoints" / "managed-deployment.yml"
    limit = int(yaml.safe_load(spec.read_text())["environment_variables"]["SCORE_MAX_ROWS"])
    assert bench.too_many_rows(limit, "managed") is None
    assert "of the kubernetes deployment" in bench.too_many_rows(limit + 1, "kubernetes")
    with LocalServer(scripted((0, 400))) as server:
        code = cli.main(["bench", "--workload", "housing", "--url", server.url, "--rows", str(limit + 1), "--requests", "1"])
    out, err = capsys.readouterr()
    assert code == 0 and len(json.loads(server.bodies[0])["data"]) == limit + 1
    assert f"exceed SCORE_MAX_ROWS={limit} of the managed deployment ({spec})" in err
    assert "errors:     400 Bad Request: 1" in out


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raising KeyboardInterrupt, as in a terminal: Python leaves SIGINT ignored when it starts with it ignored,
    as in a job that a non-interactive shell puts in the background (`.ci/run &`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_prints_what_was_measured_so_far(capsys, ctrl_c_raises):
    with LocalServer(scripted((0.02, 200))) as server:
        threading.Timer(0.5, _thread.interrupt_main).start()  # as Ctrl-C does: KeyboardInterrupt in the main thread
        code = cli.main(["bench", "--workload", "housing", "--url", server.url, "--requests", "100000", "--duration", "30"])
    out, err = capsys.readouterr()
    assert code == 130 and err.endswith("interrupted\n")
    measured = int(re.search(r"requests: +([\d,]+) in ([\d.]+) s \(Ctrl-C\)", out)[1].replace(",", ""))
    assert 0 < measured <= len(server.requests)


def test_locally_it_serves_the_latest_model_for_the_run_and_stops_it(tmp_path, capsys, monkeypatch):
    stopped = []

    class Served:  # what LocalTarget.deploy starts: azmlinfsrv over the model
        def stop(self):
            stopped.append(True)

    with LocalServer(scripted((0, 200))) as server:

        def deploy(target, workload, model, report):
            assert model.version == "3"
            target.servers[f"local-{workload.name}"] = Served()
            return [Endpoint(f"local-{workload.name}", "local", server.url + "/score", server.url + "/swagger.json")]

        def latest_model(target, workload):
            return RegisteredModel(workload.model, "3", workload.metric, 0.9, "run")

        monkeypatch.setattr(LocalTarget, "latest_model", latest_model)
        monkeypatch.setattr(LocalTarget, "deploy", deploy)
        code = cli.main(["bench", "--workload", "bank-marketing", "--work-dir", str(tmp_path), "--requests", "5"])
    assert code == 0 and len(server.requests) == 5 and stopped == [True]


@pytest.mark.parametrize(
    "workload, kind, auth_mode",
    [(BANK, "managed", "key"), (HOUSING, "kubernetes", "aml_token"), (HOUSING, "managed", "aad_token")],
)
def test_azure_sends_the_endpoints_key_and_never_prints_it(workload, kind, auth_mode, tmp_path, capsys, monkeypatch):
    workspace = use(FakeWorkspace(), monkeypatch)
    with LocalServer(scripted((0, 200), (0, 401))) as server:
        live = workspace.online_endpoints.begin_create_or_update(entities.endpoint_entity(workload, kind, OUTPUTS)).result()
        stored = workspace.online_endpoints.store[live.name]
        stored.auth_mode, stored.scoring_uri = auth_mode, f"{server.url}/api/v1/endpoint/{live.name}/score"
        kinds = [] if kind == workload.online[0] else ["--kind", kind]  # the first kind it lists is the default
        code = cli.main(["bench", "--outputs", write_outputs(tmp_path, OUTPUTS), "--workload", workload.name,
                         "--requests", "6", "--concurrency", "2", *kinds])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    key = workspace.sim.endpoint_key
    assert server.requests == [(f"/api/v1/endpoint/{live.name}/score", f"Bearer {key}")] * 6
    assert "errors:     401 Unauthorized: 3" in out
    assert key not in out + err


def test_azure_failures_are_named_and_the_key_never_shows(tmp_path, capsys, monkeypatch):
    workspace = use(FakeWorkspace(), monkeypatch)
    bank = ["bench", "--outputs", write_outputs(tmp_path, OUTPUTS), "--workload", "bank-marketing", "--requests", "3"]
    name = endpoint(BANK, "managed")
    printed = []

    def outcome(argv) -> tuple[int, str, str]:
        code = cli.main(argv)
        out, err = capsys.readouterr()
        printed.append(out + err)
        return code, out, err

    assert outcome(bank)[::2] == (1, f"error: bank-marketing: managed endpoint {name} does not exist yet (`deploy` creates it)\n")
    assert outcome([*bank, "--kind", "kubernetes"])[::2] == (1, "error: workload bank-marketing serves online on managed, not kubernetes\n")
    assert "--url applies to --local" in outcome([*bank, "--url", "http://127.0.0.1:1/score"])[2]
    assert "--kind picks an Azure endpoint" in outcome(["bench", "--workload", "housing", "--kind", "managed"])[2]

    workspace.online_endpoints.begin_create_or_update(entities.endpoint_entity(BANK, "managed", OUTPUTS))
    workspace.online_endpoints.store[name].scoring_uri = f"http://127.0.0.1:{free_port()}/score"  # nothing listens
    code, out, _ = outcome(bank)
    assert code == 0 and "errors:     connection error: 3" in out

    def refused(endpoint_name):
        raise arm_error(403, "AuthorizationFailed", "The client 'stage' does not have authorization to perform action "
                        "'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listKeys/action'")  # fmt: skip

    monkeypatch.setattr(workspace.online_endpoints, "get_keys", refused)
    code, _, err = outcome(bank)
    assert code == 1 and f"cannot read the credentials of managed endpoint {name}: (AuthorizationFailed)" in err
    assert not any(workspace.sim.endpoint_key in text for text in printed)


@pytest.mark.parametrize("option, value", [("--requests", "0"), ("--concurrency", "-2"), ("--duration", "nan"), ("--rows", "many")])
def test_options_must_be_numbers_above_zero(option, value, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "--workload", "housing", option, value])
    assert exited.value.code == 2
    assert f"argument {option}: expected a number above zero, got {value!r}" in capsys.readouterr().err
