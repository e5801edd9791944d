"""infra.e2e, the opt-in live end-to-end test: its dry run, its orchestration under a fake command runner
(teardown after any failure, leftovers fail the run, the time budget), its checks against azure-ai-ml's real
`invoke` over a fake scoring server and against a fake ARM. The live run itself is marked `live` and runs
only with AZUREML_PLATFORM_LIVE=1 (and an Azure subscription, the Pulumi CLI and credentials)."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import yaml

from infra import e2e, firewall
from infra import outputs as keys
from infra.settings import PROJECT
from jobs.azure import credentials as azure_credentials, entities
from jobs.workloads import load_workloads
from tests.arm_fake import FakeArm, FakeCredential, fake_response

ROOT = Path(__file__).resolve().parent.parent
STACK = "e2e-0a1b2c"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
BEARER = "bearer-token-that-must-never-show"
GITHUB_ENV = {azure_credentials.GITHUB_TOKEN_URL: "https://token.actions.example/?x=1",
              azure_credentials.GITHUB_TOKEN_BEARER: BEARER, "ARM_CLIENT_ID": "deployer-app", "ARM_TENANT_ID": "tenant"}


def outputs():
    return {keys.SUBSCRIPTION_ID: SUBSCRIPTION, keys.RESOURCE_GROUP: f"rg-mlp-{STACK}",
            keys.WORKSPACE: f"mlw-mlp-{STACK}-12345", keys.STORAGE_ACCOUNT: "stmlpe2e0a1b2c12345",
            keys.NETWORK_ISOLATION: "public", keys.AUTOMATION_CLIENT_SECRET: "[secret]"}


class FakeRunner:
    """Records every command; fails those whose line contains a key of `fail` (with its exit status); writes
    what `pulumi stack output` would print; `on` runs a hook for a matching command."""

    def __init__(self, fail=None, on=None):
        self.fail, self.on = fail or {}, on or {}
        self.lines, self.timeouts = [], {}

    def __call__(self, command, timeout_s=None, grace_s=60):
        line = str(command)
        self.lines.append(line)
        self.timeouts[line] = timeout_s
        for pattern, hook in self.on.items():
            if pattern in line:
                hook(command)
        if "pulumi stack output" in line:
            command.stdout.write_text(json.dumps(outputs()))
        return next((code for pattern, code in self.fail.items() if pattern in line), 0)

    def index(self, pattern, start=0):
        return next(i for i, line in enumerate(self.lines) if i >= start and pattern in line)

    def ran(self, pattern):
        return any(pattern in line for line in self.lines)


def make_run(tmp_path, runner, *, config=None, environ=None, **options):
    config = config or e2e.e2e_config(STACK, "dev", "e2e")
    printed = []
    run = e2e.EndToEnd(STACK, "dev", config, tmp_path / "work", runner=runner, environ=environ or {},
                       project_dir=tmp_path, python="python", out=printed.append, **options)
    return run, printed


def in_order(lines, *patterns):
    """Each pattern in a later line than the one before; returns the indices."""
    found, start = [], 0
    for pattern in patterns:
        index = next((i for i, line in enumerate(lines) if i >= start and pattern in line), None)
        assert index is not None, f"{pattern!r} is missing after line {start}:\n" + "\n".join(lines)
        found.append(index)
        start = index + 1
    return found


OPEN, CLOSE = "-m infra.firewall open", "-m infra.firewall close"
TEARDOWN = ("-m infra.purge --stack", "pulumi destroy --stack", "-m infra.purge --stack", "pulumi stack rm --stack",
            "-m infra.e2e check-leftovers --stack")


# -- the dry run ------------------------------------------------------------------------------------------------
def fake_tools(tmp_path):
    """pulumi and az that leave a mark if anything calls them."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "called"
    bin_dir.mkdir()
    for tool in ("pulumi", "az"):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {marker}\n")
        script.chmod(0o755)
    return bin_dir, marker


def test_the_dry_run_prints_every_step_with_its_exact_command_in_order_and_runs_nothing(tmp_path):
    bin_dir, marker = fake_tools(tmp_path)
    work = tmp_path / "work"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **GITHUB_ENV}
    done = subprocess.run([sys.executable, "-m", "infra.e2e", "--dry-run", "--stack", STACK, "--work-dir", str(work)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    config, out, ip_file = f"{work}/Pulumi.{STACK}.yaml", f"{work}/outputs.json", f"{work}/runner-ip.txt"
    python = f"{sys.executable} -m"
    login = ("$ az login --service-principal --username deployer-app --tenant tenant "
             f"--federated-token '{e2e.FEDERATED_TOKEN}' --output none")
    expected = [
        f"$ pulumi stack init --no-select {STACK}",
        f"$ pulumi up --stack {STACK} --config-file {config} --yes",
        f"$ pulumi stack output --stack {STACK} --json > {out}",
        login,  # renewed before every step that uses the Azure CLI login, in GitHub Actions
        f"$ {python} infra.firewall open --outputs {out} --ip-file {ip_file}",  # a no-op for a public stack
        f"$ {python} jobs run --outputs {out}",
        f"$ {python} infra.e2e check-endpoints --outputs {out}",
        login,
        f"$ {python} infra.firewall close --outputs {out} --ip-file {ip_file}",
        login,
        f"$ {python} infra.purge --stack {STACK} --outputs {out} --config-dir {work}",
        f"$ pulumi destroy --stack {STACK} --config-file {config} --yes",
        login,
        f"$ {python} infra.purge --stack {STACK} --outputs {out} --config-dir {work}",
        f"$ pulumi stack rm --stack {STACK} --yes",
        login,
        f"$ {python} infra.e2e check-leftovers --stack {STACK} --outputs {out}",
    ]
    assert [line for line in lines if line.startswith("$ ")] == expected
    assert "githubEnvironment: e2e" in done.stdout
    assert not marker.exists(), f"the dry run called {marker.read_text()}"
    assert not work.exists() and not (ROOT / f"Pulumi.{STACK}.yaml").exists()


def test_the_dry_run_names_the_stack_e2e_and_six_hex_digits():
    done = subprocess.run([sys.executable, "-m", "infra.e2e", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if k not in GITHUB_ENV})
    assert done.returncode == 0, done.stderr
    name = re.search(r"stack (e2e-[0-9a-f]{6}) from Pulumi\.dev\.yaml, GitHub environment e2e", done.stdout).group(1)
    assert f"$ pulumi stack init --no-select {name}\n" in done.stdout
    assert "az login" not in done.stdout  # outside GitHub Actions the Azure CLI login renews itself


def test_the_storage_firewall_opens_before_the_stage_and_closes_after_it_with_infra_firewalls_commands(tmp_path):
    """The deploy workflow's own commands (infra/firewall.py decides whether the stack needs them), each after a
    fresh Azure CLI login: the closing comes hours after the opening."""
    run, printed = make_run(tmp_path, FakeRunner(), environ=GITHUB_ENV, dry_run=True)
    assert run.run() == 0
    commands = [line for line in printed if line.startswith("$ ")]
    at = in_order(commands, "pulumi stack output", "az login", OPEN, "-m jobs run", "check-endpoints", "az login",
                  CLOSE, *TEARDOWN)
    assert at[2] == at[1] + 1 and at[6] == at[5] + 1, "a fresh login right before each"
    opening, closing = (firewall.parser().parse_args(shlex.split(commands[i][2:])[3:]) for i in (at[2], at[6]))
    assert (opening.verb, closing.verb) == ("open", "close")
    assert opening.outputs == closing.outputs == run.outputs_file and opening.ip_file == closing.ip_file
    assert opening.settle_seconds == firewall.SETTLE_S


# -- the orchestration, with a fake runner -----------------------------------------------------------------------
def test_a_passing_run_runs_every_step_in_order_and_cleans_up(tmp_path):
    runner = FakeRunner()
    run, printed = make_run(tmp_path, runner)
    assert run.run() == 0, "\n".join(printed)
    assert len(runner.lines) == 12
    in_order(runner.lines, "pulumi stack init --no-select e2e-0a1b2c", "pulumi up", "pulumi stack output", OPEN,
             "-m jobs run", "check-endpoints", CLOSE, *TEARDOWN)
    assert not (tmp_path / "work").exists(), "the work dir of a passing run is removed"
    assert printed[-1] == "e2e: passed"


@pytest.mark.parametrize("failing", ["pulumi up", "pulumi stack output", OPEN, "-m jobs run", "check-endpoints"])
def test_the_teardown_runs_after_any_failure_before_it_and_the_run_fails(tmp_path, failing):
    runner = FakeRunner(fail={failing: 1})
    run, printed = make_run(tmp_path, runner)
    assert run.run() == 1
    failed_at = runner.index(failing)
    stage = [OPEN, "-m jobs run", "check-endpoints"]
    for step in stage[stage.index(failing) + 1:] if failing in stage else stage:
        assert not runner.ran(step), f"{step} ran after {failing} failed"
    if failing in stage:  # the opening started (a half-done one may have added the rule): it is closed again
        in_order(runner.lines[failed_at + 1:], CLOSE, *TEARDOWN)
    else:
        assert not runner.ran(CLOSE)
        in_order(runner.lines[failed_at + 1:], *TEARDOWN)
    assert any(line.startswith("FAILED") for line in printed), "the summary names the failed step"
    assert (tmp_path / "work" / f"Pulumi.{STACK}.yaml").exists(), "a failed run keeps its work dir"


def test_after_a_failed_up_the_outputs_are_saved_for_purge_first(tmp_path):
    runner = FakeRunner(fail={"pulumi up": 255})
    run, _ = make_run(tmp_path, runner)
    assert run.run() == 1
    in_order(runner.lines, "pulumi up", "pulumi stack output", "-m infra.purge")


def test_an_interrupt_during_the_stage_still_tears_down(tmp_path):
    def interrupt(command):
        raise KeyboardInterrupt

    runner = FakeRunner(on={"-m jobs run": interrupt})
    run, printed = make_run(tmp_path, runner)
    assert run.run() == 1
    in_order(runner.lines, "-m jobs run", *TEARDOWN)
    assert any("interrupted: tearing down now" in line for line in printed)


def test_every_teardown_step_runs_even_when_the_one_before_failed(tmp_path):
    runner = FakeRunner(fail={"pulumi destroy": 1, "-m infra.purge": 1})
    run, _ = make_run(tmp_path, runner)
    assert run.run() == 1
    in_order(runner.lines, *TEARDOWN)


def test_a_leftover_tagged_resource_fails_the_run(tmp_path):
    runner = FakeRunner(fail={"check-leftovers": 1})
    run, printed = make_run(tmp_path, runner)
    assert run.run() == 1
    assert "FAILED (infra.e2e check-leftovers: exit 1): nothing tagged stack=e2e-0a1b2c is left" in printed


def test_a_stack_that_could_not_be_created_is_not_torn_down(tmp_path):
    runner = FakeRunner(fail={"pulumi stack init": 1})  # e.g. the name exists already: not ours to destroy
    run, _ = make_run(tmp_path, runner)
    assert run.run() == 1
    assert runner.lines == [f"pulumi stack init --no-select {STACK}"]


def test_keep_leaves_the_stack_up_and_says_how_to_tear_it_down(tmp_path):
    runner = FakeRunner()
    run, printed = make_run(tmp_path, runner, keep=True)
    assert run.run() == 0
    assert not runner.ran("infra.purge") and not runner.ran("pulumi destroy") and not runner.ran("stack rm")
    assert any(f"-m infra.e2e --teardown --stack {STACK} --base-stack dev" in line for line in printed)
    assert (tmp_path / "work" / f"Pulumi.{STACK}.yaml").exists()


def test_teardown_mode_tears_down_a_kept_stack(tmp_path):
    runner = FakeRunner()
    run, _ = make_run(tmp_path, runner)
    assert run.run_teardown() == 0
    assert runner.lines[0].startswith("pulumi stack output"), "the outputs purge needs come first"
    in_order(runner.lines, *TEARDOWN)
    assert not runner.ran("pulumi up") and not runner.ran("stack init")


def test_the_storage_firewall_is_closed_after_a_failed_stage_after_a_fresh_login(tmp_path):
    runner = FakeRunner(fail={"-m jobs run": 1})
    run, _ = make_run(tmp_path, runner, environ=GITHUB_ENV)
    assert run.run() == 1
    ip_file = f"--ip-file {run.ip_file}"
    opened, stage, login, closed = in_order(runner.lines, f"{OPEN} --outputs {run.outputs_file} {ip_file}",
                                            "-m jobs run", "az login", f"{CLOSE} --outputs {run.outputs_file} {ip_file}")
    assert login == closed - 1, "a fresh login right before the removal"
    in_order(runner.lines[closed:], *TEARDOWN)


def test_an_interrupt_while_the_firewall_opens_still_closes_it_and_tears_down(tmp_path):
    def interrupt(command):
        raise KeyboardInterrupt

    runner = FakeRunner(on={OPEN: interrupt})
    run, _ = make_run(tmp_path, runner)
    assert run.run() == 1
    assert not runner.ran("-m jobs run")
    in_order(runner.lines, OPEN, CLOSE, *TEARDOWN)


def test_the_github_id_token_never_appears_in_what_is_printed(tmp_path):
    runner = FakeRunner()
    run, printed = make_run(tmp_path, runner, environ=GITHUB_ENV)
    assert run.run() == 0
    logins = [line for line in printed if line.startswith("$ az login")]
    assert len(logins) == 5 and all(e2e.FEDERATED_TOKEN in line for line in logins)
    assert not any(BEARER in line for line in printed)


def test_the_real_runner_fetches_a_fresh_token_for_the_placeholder_and_redirects_stdout(tmp_path, monkeypatch):
    """The token comes from jobs/azure/credentials.py, with GitHub's endpoint and bearer token from the job."""
    asked = []
    monkeypatch.setattr(azure_credentials, "github_id_token", lambda *args: asked.append(args) or "the-fresh-token")
    for name in (azure_credentials.GITHUB_TOKEN_URL, azure_credentials.GITHUB_TOKEN_BEARER):
        monkeypatch.setenv(name, GITHUB_ENV[name])
    command = e2e.Command((sys.executable, "-c", "import sys; print(sys.argv[1:])", e2e.FEDERATED_TOKEN),
                          stdout=tmp_path / "out.txt")
    assert e2e.run_command(command) == 0
    assert (tmp_path / "out.txt").read_text().strip() == "['the-fresh-token']"
    assert asked == [(GITHUB_ENV[azure_credentials.GITHUB_TOKEN_URL], BEARER)]


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:9/idtoken?api-version=2.0",  # nothing listens on the discard port
     "could not reach GitHub's OIDC token endpoint ($ACTIONS_ID_TOKEN_REQUEST_URL)"),
    (None, "$ACTIONS_ID_TOKEN_REQUEST_URL and $ACTIONS_ID_TOKEN_REQUEST_TOKEN are not both set"),
])
def test_a_failed_token_request_fails_the_command_not_the_run_and_never_shows_the_bearer(monkeypatch, capsys, url,
                                                                                          says):
    monkeypatch.setenv(azure_credentials.GITHUB_TOKEN_BEARER, BEARER)
    if url:
        monkeypatch.setenv(azure_credentials.GITHUB_TOKEN_URL, url)
    else:
        monkeypatch.delenv(azure_credentials.GITHUB_TOKEN_URL, raising=False)
    assert e2e.run_command(e2e.Command(("az", "login", "--federated-token", e2e.FEDERATED_TOKEN))) == 1
    printed = capsys.readouterr()
    assert f"e2e: could not get a GitHub ID token: {says}" in printed.err
    assert BEARER not in printed.out + printed.err and "127.0.0.1:9" not in printed.out + printed.err


def test_the_real_runner_interrupts_a_command_past_its_time(tmp_path):
    script = "import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *a: sys.exit(3))\ntime.sleep(30)\n"
    command = e2e.Command((sys.executable, "-c", script))
    assert e2e.run_command(command, timeout_s=0.5, grace_s=10) == e2e.EXIT_TIMED_OUT


def test_stack_init_leaves_no_config_file_in_the_repository(tmp_path):
    """With a passphrase secrets provider, `pulumi stack init` writes the salt to Pulumi.<stack>.yaml beside
    Pulumi.yaml: it moves to the work dir, where --config-file reads it."""
    def write_salt(command):
        (tmp_path / f"Pulumi.{STACK}.yaml").write_text("encryptionsalt: v1:abc:def\n")

    runner = FakeRunner(on={"stack init": write_salt})
    run, _ = make_run(tmp_path, runner, keep=True)
    assert run.run() == 0
    assert not list(tmp_path.glob("Pulumi.*.yaml"))
    moved = yaml.safe_load((tmp_path / "work" / f"Pulumi.{STACK}.yaml").read_text())
    assert moved["encryptionsalt"] == "v1:abc:def"
    assert moved["config"][e2e.GITHUB_ENVIRONMENT_KEY] == "e2e"


# -- the time budget -----------------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, minutes):
        self.now += minutes * 60


def test_up_and_the_stage_stop_short_of_the_teardown_reserve(tmp_path):
    clock = Clock()
    runner = FakeRunner(on={"pulumi up": lambda c: clock.advance(100)})
    run, _ = make_run(tmp_path, runner, budget_minutes=330, clock=clock)
    assert run.run() == 0
    up = next(line for line in runner.lines if line.startswith("pulumi up"))
    stage = next(line for line in runner.lines if "-m jobs run" in line)
    assert runner.timeouts[up] == e2e.UP_LIMIT_MINUTES * 60
    assert runner.timeouts[stage] == (330 - 100 - e2e.TEARDOWN_RESERVE_MINUTES - e2e.ENDPOINT_CHECK_MINUTES) * 60
    assert all(runner.timeouts[line] is None for line in runner.lines if any(t in line for t in TEARDOWN))


def test_a_stage_with_no_time_left_is_not_started_and_the_teardown_runs(tmp_path):
    clock = Clock()
    runner = FakeRunner(on={"pulumi up": lambda c: clock.advance(300)})
    run, printed = make_run(tmp_path, runner, budget_minutes=330, clock=clock)
    assert run.run() == 1
    assert not runner.ran("-m jobs run")
    assert "FAILED (no time left in the budget): post-provision stage" in printed
    in_order(runner.lines, *TEARDOWN)


# -- the e2e stack's config ------------------------------------------------------------------------------------------
def test_the_e2e_config_is_the_base_config_signed_in_from_the_e2e_environment_without_the_ml_registry():
    base = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = e2e.e2e_config(STACK, "dev", "e2e")
    # an ephemeral stack never points at the real ML registry (it would publish there)
    assert e2e.ML_REGISTRY_KEY in base and e2e.ML_REGISTRY_KEY not in config
    assert config == {**{key: value for key, value in base.items() if key != e2e.ML_REGISTRY_KEY}, e2e.GITHUB_ENVIRONMENT_KEY: "e2e"}


@pytest.mark.parametrize("stack, message", [
    ("dev", "starts with 'e2e-'"),
    ("prod", "starts with 'e2e-'"),
    # the brief's e2e-<date>-<hex> would be a 26-character Key Vault name (Azure: at most 24)
    ("e2e-20250101-abcdef", "invalid Key Vault name"),
])
def test_stack_names_that_are_not_ephemeral_or_not_valid_are_refused(stack, message):
    with pytest.raises(e2e.E2EInputError, match=message):
        e2e.e2e_config(stack, "dev", "e2e")


def test_a_generated_name_fits_every_azure_name_rule():
    for _ in range(20):
        e2e.e2e_config(e2e.new_stack_name(), "dev", "e2e")


def test_prod_is_not_a_base_a_copy_of_it_could_not_be_torn_down():
    with pytest.raises(e2e.E2EInputError, match="protected") as raised:
        e2e.e2e_config(STACK, "prod", "e2e")
    assert "purge protection" in str(raised.value)


def test_a_base_with_encrypted_config_is_refused(tmp_path):
    config = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    config["config"][f"{PROJECT}:inferenceTlsKey"] = {"secure": "v1:AAAA"}
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(e2e.E2EInputError, match="inferenceTlsKey"):
        e2e.e2e_config(STACK, "dev", "e2e", config_dir=tmp_path)


def test_a_refused_config_creates_nothing(tmp_path):
    runner = FakeRunner()
    assert e2e.main(["--stack", "dev", "--work-dir", str(tmp_path / "w")], runner=runner) == 2
    assert runner.lines == [] and not (tmp_path / "w").exists()


# -- check-endpoints: azure-ai-ml's own invoke over a fake scoring server --------------------------------------------
class ScoringServer(requests.adapters.BaseAdapter):
    """Answers like jobs/src/score.py under the inference server (numbers from the regressor's endpoints,
    labels and probabilities from the classifier's), unless `broken` says how an endpoint errs."""

    def __init__(self, broken=None):
        super().__init__()
        self.broken, self.seen = broken or {}, []

    def send(self, request, **kwargs):
        host = urlparse(request.url).hostname.split(".")[0]
        self.seen.append((host, request.headers.get("Authorization")))
        data = json.loads(request.body).get("data")
        mode = self.broken.get(host)
        content_type = "application/json"
        if isinstance(data, list):
            answer = {"label": "no", "probability": 0.08} if host.startswith(BANK.name) else 452600.0
            status, body = 200, json.dumps([answer] * (len(data) - (mode == "short")))
        elif mode == "accepts-anything":
            status, body = 200, "[]"
        elif mode == "500":
            status, body = 500, json.dumps({"message": "An unexpected error occurred in scoring script."})
        elif mode == "text-400":
            status, body, content_type = 400, "bad request", "text/plain"
        else:
            status, body = 400, json.dumps({"message": "'data' must be a list of records"})
        return fake_response(request, status, body.encode(), {"Content-Type": content_type})

    def close(self):
        pass


def fake_ml_client(server):
    """An MLClient whose online_endpoints.invoke is azure-ai-ml's own method: only the endpoint lookup, the key
    and the HTTP transport are fakes."""
    from azure.ai.ml._utils._http_utils import HttpPipeline
    from azure.ai.ml.entities._endpoint.online_endpoint import EndpointAuthKeys
    from azure.ai.ml.operations._online_endpoint_operations import OnlineEndpointOperations
    from azure.core.pipeline.policies import RetryPolicy
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    session.mount("https://", server)

    def get(resource_group_name, workspace_name, endpoint_name, **kwargs):
        uri = f"https://{endpoint_name}.westeurope.inference.ml.azure.com/score"
        return types.SimpleNamespace(properties=types.SimpleNamespace(auth_mode="key", scoring_uri=uri))

    operations = types.SimpleNamespace(
        _online_operation=types.SimpleNamespace(get=get), _resource_group_name="rg", _workspace_name="ws",
        _init_kwargs={}, _validate_deployment_name=lambda *args: None,
        _get_online_credentials=lambda name, auth_mode=None: EndpointAuthKeys(primary_key="key-1", secondary_key="k"),
        # azure-core's own retries of a 5xx answer, without their back-off sleeps (0.8 s doubling) in the suite's time
        _requests_pipeline=HttpPipeline(transport=RequestsTransport(session=session),
                                        retry_policy=RetryPolicy(retry_backoff_factor=0)))  # fmt: skip
    return types.SimpleNamespace(online_endpoints=types.SimpleNamespace(
        invoke=functools.partial(OnlineEndpointOperations.invoke, operations)))


WORKLOADS = load_workloads()
HOUSING, BANK = (next(w for w in WORKLOADS if w.name == name) for name in ("housing", "bank-marketing"))


def endpoints(workload=None):
    chosen = [workload] if workload else WORKLOADS
    return {entities.endpoint_name(w, kind, outputs()) for w in chosen for kind in w.online}


def test_azure_ai_ml_raises_a_400_with_a_json_body_as_http_response_error_with_its_status(tmp_path):
    from azure.core.exceptions import HttpResponseError

    request = tmp_path / "bad.json"
    request.write_text(json.dumps(e2e.MALFORMED_REQUEST))
    with pytest.raises(HttpResponseError) as raised:
        fake_ml_client(ScoringServer()).online_endpoints.invoke(endpoint_name="ep", request_file=str(request))
    assert raised.value.status_code == 400 and "must be a list" in raised.value.message


def test_every_workloads_endpoints_answering_well_pass_the_check():
    server = ScoringServer()
    reports = []
    assert e2e.check_endpoints(fake_ml_client(server), outputs(), WORKLOADS, reports.append) == []
    checked = endpoints()
    assert {host for host, _ in server.seen} == checked and len(checked) == sum(len(w.online) for w in WORKLOADS)
    assert all(auth == "Bearer key-1" for _, auth in server.seen)
    assert sum("HTTP 400" in line for line in reports) == len(checked)
    for workload in WORKLOADS:
        rows = len(workload.request()["data"])
        assert sum(line.startswith(workload.name) and f"{rows} records" in line for line in reports) == len(workload.online)


@pytest.mark.parametrize("mode, problem", [
    ("accepts-anything", "accepted the malformed request"),
    ("500", "HTTP 500, expected 400"),
    ("text-400", "MlException (no HTTP status)"),
    ("short", "expected a list of"),
])
@pytest.mark.parametrize("workload, kind", [(HOUSING, "kubernetes"), (BANK, "managed")], ids=["housing", "bank"])
def test_an_endpoint_that_errs_fails_the_check(workload, kind, mode, problem):
    name = entities.endpoint_name(workload, kind, outputs())
    problems = e2e.check_endpoints(fake_ml_client(ScoringServer({name: mode})), outputs(), WORKLOADS, print)
    assert len(problems) == 1 and problems[0].startswith(f"{workload.name}: {kind} endpoint {name}")
    assert problem in problems[0]


def test_a_regressor_answering_like_a_classifier_fails_the_check():
    housing = entities.endpoint_name(HOUSING, "managed", outputs())

    class Confused(ScoringServer):
        def send(self, request, **kwargs):
            if urlparse(request.url).hostname.startswith(housing) and isinstance(json.loads(request.body)["data"], list):
                rows = len(json.loads(request.body)["data"])
                return fake_response(request, 200, json.dumps([{"label": "yes", "probability": 1.0}] * rows).encode(),
                                     {"Content-Type": "application/json"})
            return super().send(request, **kwargs)

    problems = e2e.check_endpoints(fake_ml_client(Confused()), outputs(), WORKLOADS, print)
    assert len(problems) == 1 and problems[0].startswith(f"housing: managed endpoint {housing}: expected")


def test_check_endpoints_command_fails_on_a_problem(tmp_path):
    (tmp_path / "outputs.json").write_text(json.dumps(outputs()))
    argv = ["--outputs", str(tmp_path / "outputs.json")]
    assert e2e.check_endpoints_main(argv, ml_client=fake_ml_client(ScoringServer())) == 0
    broken = ScoringServer({entities.endpoint_name(BANK, "managed", outputs()): "accepts-anything"})
    assert e2e.check_endpoints_main(argv, ml_client=fake_ml_client(broken)) == 1
    server = ScoringServer(broken.broken)
    assert e2e.check_endpoints_main([*argv, "--workload", "housing"], ml_client=fake_ml_client(server)) == 0
    assert {host for host, _ in server.seen} == endpoints(HOUSING)


# -- check-leftovers against a fake ARM ------------------------------------------------------------------------------
RESOURCES = f"/subscriptions/{SUBSCRIPTION}/resources"
GROUPS = f"/subscriptions/{SUBSCRIPTION}/resourcegroups"
DELETED_VAULTS = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/deletedVaults"
TAGS = {"project": PROJECT, "stack": STACK, "managed-by": "pulumi"}


def deleted_vault(name, tags):
    return {"id": f"{DELETED_VAULTS.replace('/deletedVaults', '/locations/westeurope/deletedVaults')}/{name}",
            "name": name, "properties": {"tags": tags}}


def check_leftovers(tmp_path, routes, settle="0"):
    arm = FakeArm(routes)
    (tmp_path / "outputs.json").write_text(json.dumps(outputs()))
    code = e2e.check_leftovers_main(["--stack", STACK, "--outputs", str(tmp_path / "outputs.json"),
                                     "--settle-seconds", settle], credential=FakeCredential(),
                                    transport=arm.transport(), sleep=lambda s: None)
    return code, arm


def listing(*items, **more):
    """An ARM list answer: one page of `items`."""
    return {"value": list(items), **more}


EMPTY = {("GET", RESOURCES): listing(), ("GET", GROUPS): listing(), ("GET", DELETED_VAULTS): listing()}


def test_nothing_tagged_with_the_stack_passes_and_the_query_is_by_the_stack_tag(tmp_path, capsys):
    vaults = listing(deleted_vault("kv-other", {**TAGS, "stack": "dev"}))
    code, arm = check_leftovers(tmp_path, {**EMPTY, ("GET", DELETED_VAULTS): vaults})
    assert code == 0, capsys.readouterr()
    filters = {call.path: call.query.get("$filter") for call in arm.calls}
    assert filters[RESOURCES] == filters[GROUPS] == [f"tagName eq 'stack' and tagValue eq '{STACK}'"]


def test_a_leftover_is_printed_by_id_and_fails_the_check(tmp_path, capsys):
    vm = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/MC_rg/providers/Microsoft.Network/loadBalancers/kubernetes"
    vault = deleted_vault(f"kv-mlp-{STACK}-12345", TAGS)
    code, _ = check_leftovers(tmp_path, {**EMPTY, ("GET", RESOURCES): listing({"id": vm}),
                                         ("GET", DELETED_VAULTS): listing(vault)})
    printed = capsys.readouterr()
    assert code == 1
    assert f"left over: {vm}" in printed.out and f"left over: {vault['id']} (a soft-deleted Key Vault" in printed.out


def test_every_page_of_the_listing_is_read(tmp_path, capsys):
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-mlp-{STACK}"
    next_link = f"https://management.azure.com/subscriptions/{SUBSCRIPTION}/resourcegroups/page2"
    pages = {("GET", GROUPS): listing(nextLink=next_link), ("GET", f"{GROUPS}/page2"): listing({"id": group})}
    code, _ = check_leftovers(tmp_path, {**EMPTY, **pages})
    assert code == 1 and f"left over: {group}" in capsys.readouterr().out


def test_a_leftover_that_arm_stops_listing_within_the_settle_time_does_not_count(tmp_path):
    lagging = {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-mlp-{STACK}"}
    code, arm = check_leftovers(tmp_path, {**EMPTY, ("GET", GROUPS): [listing(lagging), listing()]}, settle="600")
    assert code == 0 and arm.paths("GET").count(GROUPS) == 2


def test_an_arm_error_fails_the_check(tmp_path, capsys):
    forbidden = (403, {"error": {"code": "AuthorizationFailed", "message": "no"}})
    code, _ = check_leftovers(tmp_path, {**EMPTY, ("GET", RESOURCES): forbidden})
    assert code == 1 and "AuthorizationFailed" in capsys.readouterr().err


# -- the real thing ----------------------------------------------------------------------------------------------------
@pytest.mark.live
@pytest.mark.skipif(os.environ.get("AZUREML_PLATFORM_LIVE") != "1",
                    reason="live: builds and tears down a real stack (hours, real cost); set AZUREML_PLATFORM_LIVE=1")
def test_live_end_to_end():
    done = subprocess.run([sys.executable, "-m", "infra.e2e"], cwd=ROOT)
    assert done.returncode == 0
