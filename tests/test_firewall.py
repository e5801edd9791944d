"""infra.firewall, offline: a local HTTP server stands in for the public-IP service (api.ipify.org), and the
Azure CLI is a fake runner that records each command line (or, through the real CLI, a fake `az` on PATH).
Nothing sleeps: the settle time is recorded, not waited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import firewall
from infra import outputs as keys
from tests.local_server import LocalServer

ROOT = Path(__file__).resolve().parent.parent
IP = "203.0.113.7"
SUBSCRIPTION, GROUP, ACCOUNT = "00000000-0000-0000-0000-000000000001", "rg-mlp-prod", "stmlpprod12345"
RULE = ["--subscription", SUBSCRIPTION, "--resource-group", GROUP, "--account-name", ACCOUNT]


def stack_outputs(isolation):
    """A whole `pulumi stack output --json` (infra.firewall reads it as the stage does: every key checked)."""
    return {**{key: f"value-of-{key}" for key in keys.REQUIRED}, keys.SUBSCRIPTION_ID: SUBSCRIPTION,
            keys.RESOURCE_GROUP: GROUP, keys.STORAGE_ACCOUNT: ACCOUNT, keys.NETWORK_ISOLATION: isolation}


def public_ip_service(server):
    """api.ipify.org: the caller's address as plain text, or the (status, text) `server.answers` in turn (the
    last one repeats)."""
    status, text = server.answers[min(len(server.requests), len(server.answers)) - 1]
    return status, "text/plain", text


@pytest.fixture
def ip_service():
    with LocalServer(public_ip_service) as server:
        server.answers = [(200, IP)]
        yield server


class FakeAz:
    """Records each az command line and what the IP file held at that moment; answers `answer`."""

    def __init__(self, ip_file=None, answer=(0, "")):
        self.ip_file, self.answer, self.calls = ip_file, answer, []

    def __call__(self, argv):
        held = self.ip_file.read_text().strip() if self.ip_file and self.ip_file.exists() else None
        self.calls.append((list(argv), held))
        return self.answer

    @property
    def commands(self):
        return [argv for argv, _ in self.calls]


@pytest.fixture
def stack(tmp_path):
    """Writes the outputs of a stack with the given isolation; answers (outputs file, IP file)."""
    def write(isolation="private"):
        (tmp_path / "outputs.json").write_text(json.dumps(stack_outputs(isolation)))
        return tmp_path / "outputs.json", tmp_path / "runner-ip.txt"

    return write


def run(verb, outputs_file, ip_file, az, *extra, ip_service=None):
    sleeps = []
    argv = [verb, "--outputs", str(outputs_file), "--ip-file", str(ip_file), *extra]
    if ip_service is not None:
        argv += ["--ip-url", ip_service.url]
    return firewall.main(argv, runner=az, sleep=sleeps.append), sleeps


def test_a_public_stack_opens_and_closes_nothing(stack, ip_service, capsys):
    outputs_file, ip_file = stack("public")
    az = FakeAz()
    assert run("open", outputs_file, ip_file, az, ip_service=ip_service) == (0, [])
    assert "nothing to open (network_isolation is 'public', not 'private')" in capsys.readouterr().out
    assert az.calls == [] and ip_service.requests == [] and not ip_file.exists()
    assert run("close", outputs_file, ip_file, az) == (0, [])
    assert az.calls == [] and "nothing to close" in capsys.readouterr().out


def test_a_private_stack_records_the_address_then_adds_the_rule_and_waits_for_it(stack, ip_service, capsys):
    outputs_file, ip_file = stack("private")
    az = FakeAz(ip_file)
    code, sleeps = run("open", outputs_file, ip_file, az, ip_service=ip_service)
    assert code == 0, capsys.readouterr().err
    add = ["az", "storage", "account", "network-rule", "add", *RULE, "--ip-address", IP, "--output", "none"]
    assert az.calls == [(add, IP)], "the address is in the file before the rule is added"
    assert ip_file.read_text() == f"{IP}\n"
    assert sleeps == [firewall.SETTLE_S] == [60]
    assert len(ip_service.requests) == 1


def test_the_settle_time_can_be_shortened(stack, ip_service):
    outputs_file, ip_file = stack("private")
    assert run("open", outputs_file, ip_file, FakeAz(), "--settle-seconds", "0", ip_service=ip_service) == (0, [])


@pytest.mark.parametrize("answer", ["2001:db8::7", "999.1.1.1", "<html>rate limited</html>", ""])
def test_an_answer_that_is_not_an_ipv4_address_adds_no_rule(stack, ip_service, capsys, answer):
    outputs_file, ip_file = stack("private")
    ip_service.answers = [(200, answer)]
    az = FakeAz()
    code, sleeps = run("open", outputs_file, ip_file, az, ip_service=ip_service)
    assert code == 1 and az.calls == [] and sleeps == [] and not ip_file.exists()
    assert capsys.readouterr().err == f"firewall open: {ip_service.url} did not answer with an IPv4 address: {answer!r}\n"


def test_the_ip_service_is_asked_again_after_a_passing_failure_not_after_a_refusal(stack, ip_service, capsys):
    outputs_file, ip_file = stack("private")
    ip_service.answers = [(503, "busy"), (200, IP)]
    code, sleeps = run("open", outputs_file, ip_file, FakeAz(), ip_service=ip_service)
    assert code == 0 and sleeps == [1, firewall.SETTLE_S] and len(ip_service.requests) == 2
    ip_service.answers, ip_service.requests = [(404, "no")], []
    code, sleeps = run("open", outputs_file, ip_file, FakeAz(), ip_service=ip_service)
    assert code == 1 and sleeps == [] and len(ip_service.requests) == 1
    assert "could not get this machine's public IP address from" in capsys.readouterr().err


def test_an_unreachable_ip_service_is_named_after_the_retries(stack, capsys):
    outputs_file, ip_file = stack("private")
    az = FakeAz()
    code, sleeps = run("open", outputs_file, ip_file, az, "--ip-url", "http://127.0.0.1:9/")  # the discard port
    assert code == 1 and sleeps == [1, 2, 4] and az.calls == []
    assert capsys.readouterr().err.startswith(
        "firewall open: could not get this machine's public IP address from http://127.0.0.1:9/: ")


def test_a_failing_az_fails_with_one_line_that_names_it_and_the_address_stays_for_close(stack, ip_service, capsys):
    outputs_file, ip_file = stack("private")
    stderr = ("WARNING: a warning first\nERROR: (AuthorizationFailed) The client 'deployer' does not have "
              "authorization to perform action 'Microsoft.Storage/storageAccounts/write'\nCode: AuthorizationFailed\n")
    az = FakeAz(answer=(1, stderr))
    code, sleeps = run("open", outputs_file, ip_file, az, ip_service=ip_service)
    assert code == 1 and sleeps == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"firewall open: `az storage account network-rule add` for {IP} on storage account {ACCOUNT} failed (exit 1): "
        "ERROR: (AuthorizationFailed) The client 'deployer' does not have authorization")
    assert ip_file.read_text().strip() == IP


def test_close_removes_exactly_the_recorded_address_once(stack, capsys):
    outputs_file, ip_file = stack("private")
    ip_file.write_text(f"{IP}\n")
    az = FakeAz()
    assert run("close", outputs_file, ip_file, az) == (0, [])
    assert az.commands == [["az", "storage", "account", "network-rule", "remove", *RULE, "--ip-address", IP,
                            "--output", "none"]]
    assert not ip_file.exists()
    assert run("close", outputs_file, ip_file, az) == (0, [])  # again: nothing left to do
    assert len(az.calls) == 1
    assert capsys.readouterr().out.endswith(f"nothing to close (no address in {ip_file})\n")


def test_close_without_an_address_needs_no_outputs(tmp_path):
    az = FakeAz()
    assert run("close", tmp_path / "missing.json", tmp_path / "runner-ip.txt", az) == (0, [])
    assert az.calls == []


def test_a_failing_removal_fails_and_keeps_the_address_for_another_try(stack, capsys):
    outputs_file, ip_file = stack("private")
    ip_file.write_text(IP)
    assert run("close", outputs_file, ip_file, FakeAz(answer=(1, "ERROR: network unreachable\n"))) == (1, [])
    assert capsys.readouterr().err == (f"firewall close: `az storage account network-rule remove` for {IP} on storage "
                                       f"account {ACCOUNT} failed (exit 1): ERROR: network unreachable\n")
    assert ip_file.read_text() == IP


def test_unusable_outputs_name_the_problem(stack, ip_service, capsys):
    outputs_file, ip_file = stack("private")
    outputs_file.write_text(json.dumps({**stack_outputs("private"), keys.STORAGE_ACCOUNT: ""}))
    az = FakeAz()
    assert run("open", outputs_file, ip_file, az, ip_service=ip_service) == (2, [])
    assert f"{keys.STORAGE_ACCOUNT}: expected a non-empty string" in capsys.readouterr().err
    assert az.calls == [] and ip_service.requests == []


def test_the_cli_runs_the_azure_cli_on_path(stack, ip_service, tmp_path):
    """`python -m infra.firewall` as the workflow runs it, with a fake `az` that records its arguments."""
    outputs_file, ip_file = stack("private")
    bin_dir, log = tmp_path / "bin", tmp_path / "az.log"
    bin_dir.mkdir()
    (bin_dir / "az").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "az").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    common = ["--outputs", str(outputs_file), "--ip-file", str(ip_file)]
    for argv in (["open", *common, "--ip-url", ip_service.url, "--settle-seconds", "0"], ["close", *common]):
        done = subprocess.run([sys.executable, "-m", "infra.firewall", *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    rule = " ".join([*RULE, "--ip-address", IP, "--output", "none"])
    assert log.read_text().splitlines() == [f"storage account network-rule {verb} {rule}" for verb in ("add", "remove")]


def test_a_missing_azure_cli_is_named(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert firewall.run_az(["az", "version"]) == (127, "az: not installed")
