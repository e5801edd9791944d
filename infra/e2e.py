"""The opt-in live end-to-end test: an ephemeral stack, built, used and torn down for real.

    python -m infra.e2e --dry-run                        # every step with its exact command; runs nothing
    python -m infra.e2e [--base-stack dev] [--stack e2e-1a2b3c] [--keep] [--budget-minutes 330]
    python -m infra.e2e --teardown --stack e2e-1a2b3c    # finish what a --keep (or cancelled) run left up

It needs the Pulumi CLI logged in to the state backend, and Azure credentials: `az login` on a laptop; in
GitHub Actions the deployer's azure/login (the e2e workflow), which this module renews before each step that
uses the Azure CLI, because that login's token lasts 60-90 minutes and the run lasts hours.

Steps, each printed with its exact command line before it runs:
  1. provision  `pulumi stack init` with a unique name (e2e-<6 hex>), then `pulumi up --yes`, with the base
                stack's config copied to a temporary file (`--config-file`; the repository never holds a
                Pulumi.<e2e stack>.yaml) and githubEnvironment set to the environment the run signs in from
  2. stage      `pulumi stack output --json` to a file, `python -m jobs run --outputs FILE`, then both online
                endpoints (managed, Kubernetes) must answer the sample request with one prediction per record
                and reject a malformed one with HTTP 400 (`python -m infra.e2e check-endpoints`)
  3. teardown   purge (the live workspace, for good), `pulumi destroy --yes`, purge (the soft-deleted Key
                Vault), `pulumi stack rm --yes`; after a failure too, unless --keep
  4. leftovers  ARM must list nothing tagged stack=<name> (`python -m infra.e2e check-leftovers`)
Around the stage, `python -m infra.firewall open` and `close` (the deploy workflow's own steps) let this
machine through a network-isolated stack's storage firewall; for a public stack they do nothing.

The run keeps to --budget-minutes: `pulumi up` and the stage are interrupted (SIGINT, so that they stop
cleanly) when only the teardown's reserve is left. Exit status: 0 when every step passed, 1 when any failed
(the summary names them), 2 for bad arguments or an unusable base config (nothing is created).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import yaml

from infra import outputs as keys
from infra.settings import PROJECT, SettingsError, parse, stack_tags
from infra.stacks import ALWAYS_PROTECTED, PROTECT_KEY, StackConfigError, stack_config

ROOT = Path(__file__).resolve().parent.parent
STACK_PREFIX = "e2e-"
# e2e-<6 hex>, not e2e-<date>-<hex>: the stack name is part of the Key Vault name, kv-<prefix>-<stack>-<5>,
# which Azure caps at 24 characters, so with the prefix "mlp" a stack name has at most 11 (infra/naming.py)
STACK_HEX = 6
DEFAULT_BASE = "dev"
DEFAULT_ENVIRONMENT = "e2e"
GITHUB_ENVIRONMENT_KEY = f"{PROJECT}:githubEnvironment"
KEY_VAULT_KEY = f"{PROJECT}:keyVault"
ML_REGISTRY_KEY = f"{PROJECT}:mlRegistry"

# GitHub-hosted jobs stop at 6 hours ("Each job in a workflow can run for up to 6 hours of execution time",
# Actions limits); the e2e workflow gives this run 330 minutes of its 360 and keeps the rest for its setup
BUDGET_MINUTES = 330
# purge, destroy (AKS alone takes a while to delete), purge, stack rm and the leftover check: our estimate
# is 20-40 minutes; the reserve is what `pulumi up` and the stage are stopped short of
TEARDOWN_RESERVE_MINUTES = 60
# the deploy workflow's provision job has the same bound (.github/workflows/stack.yml)
UP_LIMIT_MINUTES = 120
ENDPOINT_CHECK_MINUTES = 10
# after SIGINT, `pulumi up` waits for the operations in flight (an AKS create can take many minutes) and
# saves its state; the stage only has to stop polling
PULUMI_GRACE_S = 15 * 60
STAGE_GRACE_S = 2 * 60
EXIT_TIMED_OUT = 124

# a request the scoring script must refuse with a 400 that names the problem (jobs/src/score.py)
MALFORMED_REQUEST = {"data": "not a list"}

# stands for the token in a printed (or dry-run) command; the real one, a GitHub ID token for Entra
# (jobs/azure/credentials.py), is fetched right before the command
FEDERATED_TOKEN = "<fresh GitHub ID token>"

# ARM: resources and resource groups by tag; Key Vault's deleted-vault records (they keep the vault's tags)
RESOURCES_API = "2021-04-01"
KEY_VAULT_API = "2023-07-01"
# ARM's listings lag a deletion a little: a leftover must still be there after this long to count
LEFTOVER_SETTLE_S = 300
LEFTOVER_POLL_S = 60


class E2EInputError(ValueError):
    """The stack name or the base stack's config cannot be used; nothing was created."""


@dataclass(frozen=True)
class Command:
    """One command line. `stdout` redirects its standard output to a file, as `> FILE` would."""

    argv: tuple[str, ...]
    stdout: Path | None = None

    def __str__(self) -> str:
        line = shlex.join(self.argv)
        return f"{line} > {shlex.quote(str(self.stdout))}" if self.stdout else line

    def short(self) -> str:
        """`pulumi up`, `jobs run`, `infra.e2e check-leftovers`: what failed, for the summary."""
        argv = self.argv[2:] if len(self.argv) > 2 and self.argv[1] == "-m" else self.argv
        return " ".join(arg for arg in argv[:3] if not arg.startswith("-"))


Runner = Callable[[Command, "float | None", float], int]


def _github_variables(environ: Mapping[str, str] = os.environ) -> tuple[str | None, str | None]:
    """GitHub's OIDC token endpoint and its bearer token: set in a job with `permissions: id-token: write`."""
    from jobs.azure.credentials import GITHUB_TOKEN_BEARER, GITHUB_TOKEN_URL

    return environ.get(GITHUB_TOKEN_URL), environ.get(GITHUB_TOKEN_BEARER)


def fresh_id_token(environ: Mapping[str, str] = os.environ) -> str:
    """A fresh GitHub ID token for Entra ID (it lives about 5 minutes), from jobs/azure/credentials.py. Its
    FlowError names what failed, never the bearer token or the endpoint's URL."""
    from jobs.azure import credentials as azure_credentials
    from jobs.flow import FlowError

    url, bearer = _github_variables(environ)
    if not (url and bearer):
        raise FlowError(f"${azure_credentials.GITHUB_TOKEN_URL} and ${azure_credentials.GITHUB_TOKEN_BEARER} are "
                        "not both set: the job needs `permissions: id-token: write`")
    return azure_credentials.github_id_token(url, bearer)


def run_command(command: Command, timeout_s: float | None = None, grace_s: float = 60) -> int:
    """Run for real. Past `timeout_s` the command gets SIGINT (Pulumi and Python both stop cleanly on it),
    then `grace_s` to exit before it is killed; the exit status is then 124, like timeout(1)."""
    from jobs.flow import FlowError

    try:
        argv = [fresh_id_token() if arg == FEDERATED_TOKEN else arg for arg in command.argv]
    except FlowError as error:
        print(f"e2e: could not get a GitHub ID token: {error}", file=sys.stderr, flush=True)
        return 1
    out = open(command.stdout, "w") if command.stdout else None  # noqa: SIM115 (closed below)
    try:
        try:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=out)
        except FileNotFoundError:
            print(f"e2e: {argv[0]} is not installed", file=sys.stderr, flush=True)
            return 127
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"e2e: {argv[0]} ran past its {timeout_s / 60:.0f} minutes: interrupting it", flush=True)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return EXIT_TIMED_OUT
        except KeyboardInterrupt:
            # the terminal sent SIGINT to the child too: let it stop cleanly, then hand the interrupt on
            try:
                process.wait(timeout=grace_s)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.kill()
            raise
    finally:
        if out:
            out.close()


def new_stack_name() -> str:
    return f"{STACK_PREFIX}{secrets.token_hex(STACK_HEX // 2)}"


def _secure_keys(value, path: str = "") -> list[str]:
    if isinstance(value, dict):
        if "secure" in value:
            return [path]
        return [found for key, item in value.items() for found in _secure_keys(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _secure_keys(item, f"{path}[{index}]")]
    return []


def e2e_config(stack: str, base: str, environment: str, config_dir: Path = ROOT) -> dict:
    """The e2e stack's config: the base stack's, with githubEnvironment set to the environment the run signs
    in from. Refused (E2EInputError) when the stack could not be torn down and purged completely, or when the
    program would reject it: then nothing is created."""
    if not stack.startswith(STACK_PREFIX):
        raise E2EInputError(f"stack {stack!r}: an e2e stack's name starts with {STACK_PREFIX!r}, so that this "
                            "tool never creates or destroys any other stack")
    if (config_dir / f"Pulumi.{stack}.yaml").exists():
        raise E2EInputError(f"stack {stack!r} has a config file in the repository: not an ephemeral stack")
    try:
        config = dict(stack_config(base, config_dir))
    except StackConfigError as error:
        raise E2EInputError(str(error)) from None
    problems = []
    if secure := _secure_keys(config):
        problems.append(f"Pulumi.{base}.yaml holds secrets ({', '.join(secure)}): they are encrypted for stack "
                        f"{base!r} and cannot be copied to another stack")
    if base in ALWAYS_PROTECTED or config.get(PROTECT_KEY) is True:
        problems.append(f"stack {base!r} is protected: a copy of it could not be torn down")
    if (config.get(KEY_VAULT_KEY) or {}).get("purgeProtection") is True:
        problems.append(f"stack {base!r} has Key Vault purge protection: its vault would outlive the test")
    config[GITHUB_ENVIRONMENT_KEY] = environment
    # never the real ML registry: an ephemeral copy of dev would publish to it, and its role assignments there would
    # outlive nothing but be one more writer (infra/ml_registry.py). The copy trains its own models
    config.pop(ML_REGISTRY_KEY, None)
    if not problems:
        # the program's own validation (names included: the stack name is part of them), before anything exists
        raw = {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
        try:
            parse(raw, stack)
        except SettingsError as error:
            problems += error.problems
    if problems:
        raise E2EInputError(f"cannot run the e2e test on a copy of stack {base!r} as {stack!r}:\n  "
                            + "\n  ".join(problems))
    return config


class EndToEnd:
    """The run: every step is a Command given to `runner`, so the order and the teardown are testable."""

    def __init__(self, stack: str, base: str, config: dict, work_dir: Path, *, runner: Runner = run_command,
                 dry_run: bool = False, keep: bool = False, budget_minutes: float = BUDGET_MINUTES,
                 environ: Mapping[str, str] = os.environ, project_dir: Path = ROOT,
                 python: str = sys.executable, clock: Callable[[], float] = time.monotonic,
                 out: Callable[[str], None] | None = None):
        self.stack, self.base, self.config, self.work_dir = stack, base, config, Path(work_dir)
        self.runner, self.dry_run, self.keep, self.budget_s = runner, dry_run, keep, budget_minutes * 60
        self.environ, self.project_dir, self.python = environ, Path(project_dir), python
        self.clock = clock
        self.out = out or (lambda text: print(text, flush=True))
        self.started = clock()
        self.config_file = self.work_dir / f"Pulumi.{stack}.yaml"
        self.outputs_file = self.work_dir / "outputs.json"
        self.ip_file = self.work_dir / "runner-ip.txt"
        self.results: list[tuple[str, str]] = []
        self.firewall_opening = False  # once it started, the storage firewall is closed again, whatever follows
        # in GitHub Actions the Azure CLI login is renewed before each step that uses it (see the docstring)
        self.renew_login = all(_github_variables(environ)) and all(environ.get(name) for name in ("ARM_CLIENT_ID",
                                                                                                   "ARM_TENANT_ID"))

    # -- the commands --------------------------------------------------------------------------------------
    def _pulumi(self, *argv: str) -> Command:
        return Command(("pulumi", *argv))

    def _python(self, *argv: str) -> Command:
        return Command((self.python, "-m", *argv))

    def init_cmd(self):
        return self._pulumi("stack", "init", "--no-select", self.stack)

    def up_cmd(self):
        return self._pulumi("up", "--stack", self.stack, "--config-file", str(self.config_file), "--yes")

    def output_cmd(self):
        return Command(("pulumi", "stack", "output", "--stack", self.stack, "--json"), stdout=self.outputs_file)

    def stage_cmd(self):
        return self._python("jobs", "run", "--outputs", str(self.outputs_file))

    def endpoints_cmd(self):
        return self._python("infra.e2e", "check-endpoints", "--outputs", str(self.outputs_file))

    def purge_cmd(self):
        # --config-dir: purge refuses protected stacks, reading Pulumi.<stack>.yaml, which lives in work_dir
        return self._python("infra.purge", "--stack", self.stack, "--outputs", str(self.outputs_file),
                            "--config-dir", str(self.work_dir))

    def destroy_cmd(self):
        return self._pulumi("destroy", "--stack", self.stack, "--config-file", str(self.config_file), "--yes")

    def stack_rm_cmd(self):
        # no --force: a stack that still has resources stays, and the run fails with it
        return self._pulumi("stack", "rm", "--stack", self.stack, "--yes")

    def leftovers_cmd(self):
        return self._python("infra.e2e", "check-leftovers", "--stack", self.stack, "--outputs",
                            str(self.outputs_file))

    def login_cmds(self) -> list[Command]:
        if not self.renew_login:
            return []
        return [Command(("az", "login", "--service-principal", "--username", self.environ["ARM_CLIENT_ID"],
                         "--tenant", self.environ["ARM_TENANT_ID"], "--federated-token", FEDERATED_TOKEN,
                         "--output", "none"))]

    def firewall_cmd(self, verb: str):
        # the deploy workflow's own steps (.github/workflows/stack.yml): a no-op for a public stack
        return self._python("infra.firewall", verb, "--outputs", str(self.outputs_file), "--ip-file",
                            str(self.ip_file))

    # -- running -------------------------------------------------------------------------------------------
    def _remaining_s(self) -> float | None:
        if not self.budget_s:
            return None
        return self.budget_s - (self.clock() - self.started)

    def _limit(self, cap_s: float | None, reserve_s: float) -> float | None:
        remaining = self._remaining_s()
        if remaining is None:
            return cap_s
        left = remaining - reserve_s
        return left if cap_s is None else min(cap_s, left)

    def step(self, title: str, *commands: Command, timeout_s: float | None = None, grace_s: float = 60) -> bool:
        """Run the commands in order, stopping at the first failure; record the outcome under `title`."""
        self.out(f"\n== {title}")
        for command in commands:
            self.out(f"$ {command}")
            if self.dry_run:
                continue
            if timeout_s is not None and timeout_s <= 0:
                self.results.append((title, "FAILED (no time left in the budget)"))
                return False
            code = self.runner(command, timeout_s, grace_s)
            if code != 0:
                why = "ran out of its time budget" if code == EXIT_TIMED_OUT else f"exit {code}"
                self.results.append((title, f"FAILED ({command.short()}: {why})"))
                return False
        self.results.append((title, "would run" if self.dry_run else "ok"))
        return True

    def note(self, text: str) -> None:
        self.out(f"# {text}")

    def write_config(self) -> None:
        self.note(f"{self.config_file}: the config of Pulumi.{self.base}.yaml, with {GITHUB_ENVIRONMENT_KEY}: "
                  f"{self.config[GITHUB_ENVIRONMENT_KEY]}")
        if self.dry_run:
            return
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {}
        if self.config_file.exists():  # a resumed teardown: keep what `stack init` moved here (secrets provider)
            document = {k: v for k, v in (yaml.safe_load(self.config_file.read_text()) or {}).items() if k != "config"}
        self.config_file.write_text(yaml.safe_dump({**document, "config": self.config}, sort_keys=False))

    def adopt_stray_config(self) -> None:
        """`pulumi stack init` takes no --config-file: with a passphrase secrets provider it writes the salt to
        Pulumi.<stack>.yaml beside Pulumi.yaml. Move that into the work dir's file, so that the repository
        never holds the e2e stack's file (the test suite runs every Pulumi.*.yaml it finds)."""
        stray = self.project_dir / f"Pulumi.{self.stack}.yaml"
        if self.dry_run or not stray.exists():
            return
        extra = {k: v for k, v in (yaml.safe_load(stray.read_text()) or {}).items() if k != "config"}
        document = yaml.safe_load(self.config_file.read_text()) or {}
        self.config_file.write_text(yaml.safe_dump({**extra, **document}, sort_keys=False))
        stray.unlink()
        self.note(f"moved {', '.join(extra) or 'nothing'} from {stray} into {self.config_file}")

    def _saved_outputs(self) -> bool:
        try:
            return isinstance(json.loads(self.outputs_file.read_text()), dict)
        except (OSError, ValueError):
            return False

    def open_firewall(self) -> bool:
        self.firewall_opening = True
        return self.step("open the storage firewall to this machine (a network-isolated stack only)",
                         *self.login_cmds(), self.firewall_cmd("open"))

    def close_firewall(self) -> None:
        if self.firewall_opening:
            self.step("close the storage firewall again", *self.login_cmds(), self.firewall_cmd("close"))

    def provision_and_stage(self) -> None:
        reserve = TEARDOWN_RESERVE_MINUTES * 60
        if not self.step("pulumi up", self.up_cmd(), timeout_s=self._limit(UP_LIMIT_MINUTES * 60, reserve),
                         grace_s=PULUMI_GRACE_S):
            return
        if not self.step("save the stack outputs", self.output_cmd()):
            return
        if not self.open_firewall():
            return
        if not self.step("post-provision stage", self.stage_cmd(),
                         timeout_s=self._limit(None, reserve + ENDPOINT_CHECK_MINUTES * 60), grace_s=STAGE_GRACE_S):
            return
        self.step("every workload's online endpoints: its sample request, and HTTP 400 for a malformed one",
                  self.endpoints_cmd(),
                  timeout_s=ENDPOINT_CHECK_MINUTES * 60)

    def teardown(self) -> None:
        """Every step runs whatever the one before did: each removes what it can, and the leftover check
        reports the rest."""
        if not self.dry_run and not self._saved_outputs():
            self.step("save the stack outputs (for purge)", self.output_cmd())
        self.step("delete the live workspace for good (before destroy removes its resource group)",
                  *self.login_cmds(), self.purge_cmd())
        self.step("pulumi destroy", self.destroy_cmd())
        self.step("purge the Key Vault that destroy left soft-deleted", *self.login_cmds(), self.purge_cmd())
        self.step("remove the stack", self.stack_rm_cmd())

    def check_leftovers(self) -> None:
        self.step(f"nothing tagged stack={self.stack} is left", *self.login_cmds(), self.leftovers_cmd())

    def resume_hint(self) -> str:
        return f"{shlex.quote(self.python)} -m infra.e2e --teardown --stack {self.stack} --base-stack {self.base}"

    def run(self) -> int:
        self.header("run")
        self.write_config()
        if not self.step("create the stack", self.init_cmd()):
            self.note("the stack was not created, so there is nothing to tear down")
            return self.finish()
        self.adopt_stray_config()
        try:
            self.provision_and_stage()
        except KeyboardInterrupt:
            self.results.append(("interrupted", "FAILED"))
            self.note(f"interrupted: tearing down now (interrupt again to stop; then: {self.resume_hint()})")
        self.close_firewall()
        if self.keep:
            self.note(f"--keep: stack {self.stack} stays up; tear it down with: {self.resume_hint()}")
            return self.finish()
        return self.teardown_and_check()

    def run_teardown(self) -> int:
        self.header("teardown")
        self.write_config()
        return self.teardown_and_check()

    def teardown_and_check(self) -> int:
        try:
            self.teardown()
            self.check_leftovers()
        except KeyboardInterrupt:
            self.results.append(("teardown", "FAILED (interrupted)"))
            self.note(f"teardown interrupted: finish it with: {self.resume_hint()}")
        return self.finish()

    def header(self, what: str) -> None:
        mode = "dry run: nothing runs" if self.dry_run else what
        budget = f"{self.budget_s / 60:.0f} minutes" if self.budget_s else "no time budget"
        self.out(f"e2e ({mode}): stack {self.stack} from Pulumi.{self.base}.yaml, GitHub environment "
                 f"{self.config[GITHUB_ENVIRONMENT_KEY]}, {budget}, work dir {self.work_dir}")

    def finish(self) -> int:
        stray = self.project_dir / f"Pulumi.{self.stack}.yaml"
        if not self.dry_run and stray.exists():
            stray.unlink()
        failed = [title for title, outcome in self.results if outcome.startswith("FAILED")]
        self.out("\n== summary")
        for title, outcome in self.results:
            self.out(f"{outcome}: {title}")
        if failed:
            self.out(f"e2e: FAILED: {'; '.join(failed)}. The work dir {self.work_dir} is kept")
            return 1
        if not self.dry_run and not self.keep:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.out("e2e: dry run done, nothing ran" if self.dry_run else "e2e: passed")
        return 0


# -- the checks, run as their own commands so that each step is one command line ---------------------------
def check_endpoints(ml_client, outputs: Mapping[str, str], workloads: list, report: Callable[[str], None] = print
                    ) -> list[str]:
    """Every workload's online endpoints answer its sample request (one number per record from a regressor,
    a label and its probability from a classifier: `jobs.flow.answer_problem`), and a malformed request
    with HTTP 400.

    azure-ai-ml's `online_endpoints.invoke` posts to the scoring URI and raises on any status but 200/201
    (`validate_response` in azure/ai/ml/_utils/_endpoint_utils.py): a JSON error body becomes an
    HttpResponseError whose `status_code` is the HTTP status (400 is in no error map, so it stays a plain
    HttpResponseError); a body that is not JSON becomes an MlException without the status."""
    from jobs.azure import entities, rollout
    from jobs.flow import answer_problem

    problems = []
    for workload in workloads:
        payload = workload.request()
        rows = len(payload["data"])
        for kind in workload.online:
            name = entities.endpoint_name(workload, kind, outputs)
            where = f"{workload.name}: {kind} endpoint {name}"
            try:
                answers = rollout.score(ml_client, name, payload)
            except Exception as error:  # noqa: BLE001 (any failure to answer fails the check, and is reported)
                problems.append(f"{where}: the sample request failed: {type(error).__name__}: {error}")
            else:
                problem = answer_problem(workload.task, answers, rows)
                if problem:
                    problems.append(f"{where}: {problem}")
                else:
                    report(f"{where}: {rows} records -> {str(answers)[:200]}")
            problems.extend(f"{where}: {problem}" for problem in _malformed_refused(ml_client, name, report, where))
    return problems


def _malformed_refused(ml_client, name: str, report: Callable[[str], None], where: str) -> list[str]:
    from azure.core.exceptions import HttpResponseError

    with tempfile.TemporaryDirectory() as folder:
        request = Path(folder) / "malformed.json"
        request.write_text(json.dumps(MALFORMED_REQUEST))
        try:
            answer = ml_client.online_endpoints.invoke(endpoint_name=name, request_file=str(request))
        except HttpResponseError as error:
            if error.status_code == 400:
                report(f"{where}: malformed request -> HTTP 400 ({error.message!s:.200})")
                return []
            return [f"malformed request -> HTTP {error.status_code}, expected 400: {error.message!s:.200}"]
        except Exception as error:  # noqa: BLE001 (e.g. MlException: an error body that is not JSON)
            return [f"malformed request -> {type(error).__name__} (no HTTP status), expected HTTP 400 with a "
                    f"JSON message: {error!s:.200}"]
    return [f"accepted the malformed request {MALFORMED_REQUEST} (answered {answer!s:.200}), expected HTTP 400"]


def _load_json(path: Path) -> dict:
    value = json.loads(Path(path).read_text())
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


def check_endpoints_main(argv: list[str], ml_client=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.e2e check-endpoints")
    parser.add_argument("--outputs", type=Path, required=True, help="`pulumi stack output --json`, saved")
    parser.add_argument("--workload", action="append", default=[], help="check only this workload (repeatable)")
    args = parser.parse_args(argv)
    try:
        from jobs.workloads import load_workloads

        outputs, workloads = _load_json(args.outputs), load_workloads(args.workload)
        if ml_client is None:
            from jobs.azure.target import connect  # the stage's own sign-in: the automation identity in CI

            ml_client, _ = connect(outputs)
        problems = check_endpoints(ml_client, outputs, workloads)
    except Exception as error:  # noqa: BLE001 (one line that names it, not a traceback)
        print(f"check-endpoints: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"check-endpoints: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _pages(client, path: str, api_version: str, **params):
    from azure.core.rest import HttpRequest

    from infra.purge import ARM_ENDPOINT, PurgeFailed

    request = HttpRequest("GET", f"{ARM_ENDPOINT}{path}", params={"api-version": api_version, **params})
    while request is not None:
        response = client.send_request(request)
        if response.status_code != 200:
            raise PurgeFailed(f"listing {path}", response)
        body = response.json()
        yield from body.get("value", [])
        link = body.get("nextLink")
        request = HttpRequest("GET", link) if link else None


def leftovers(client, subscription: str, stack: str, project: str = PROJECT) -> list[str]:
    """What ARM still lists with the stack's tags: resources, resource groups and soft-deleted Key Vaults.

    Resources and groups are listed with ARM's tag filter, which returns them without their tags ("when
    resources are filtered by tag name and value, the original tags for each resource will not be returned"),
    so the stack tag alone selects them: the e2e stack's name is unique. A deleted-vault record keeps its tags."""
    tag, value = "stack", stack_tags(stack, project)["stack"]
    tag_filter = {"$filter": f"tagName eq '{tag}' and tagValue eq '{value}'"}
    found = [item["id"] for path in (f"/subscriptions/{subscription}/resources",
                                     f"/subscriptions/{subscription}/resourcegroups")
             for item in _pages(client, path, RESOURCES_API, **tag_filter)]
    wanted = stack_tags(stack, project)
    for vault in _pages(client, f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/deletedVaults",
                        KEY_VAULT_API):
        tags = (vault.get("properties") or {}).get("tags") or {}
        if all(tags.get(k) == v for k, v in wanted.items()):
            found.append(f"{vault['id']} (a soft-deleted Key Vault: it holds its name until purged)")
    return found


def check_leftovers_main(argv: list[str], credential=None, transport=None, sleep=time.sleep,
                         environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.e2e check-leftovers")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--outputs", type=Path, help="saved stack outputs: the subscription to search")
    parser.add_argument("--subscription", help="the subscription (default: the outputs', else ARM_SUBSCRIPTION_ID)")
    parser.add_argument("--settle-seconds", type=float, default=LEFTOVER_SETTLE_S,
                        help="how long a leftover must persist to count (ARM's listings lag deletions)")
    args = parser.parse_args(argv)
    subscription = args.subscription
    if not subscription and args.outputs:
        try:  # absent or empty when `pulumi up` failed early: then the environment's subscription
            subscription = _load_json(args.outputs).get(keys.SUBSCRIPTION_ID)
        except (OSError, ValueError):
            subscription = None
    subscription = subscription or environ.get("ARM_SUBSCRIPTION_ID") or environ.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        print("check-leftovers: no subscription (pass --subscription, or set ARM_SUBSCRIPTION_ID)", file=sys.stderr)
        return 2
    from azure.core.exceptions import HttpResponseError

    from infra.purge import PurgeFailed, arm_client

    if credential is None:
        from azure.identity import DefaultAzureCredential  # the deployer's Azure CLI login, renewed by the run

        credential = DefaultAzureCredential()
    client = arm_client(credential, transport)
    deadline = time.monotonic() + args.settle_seconds
    try:
        while True:
            found = leftovers(client, subscription, args.stack)
            if not found or time.monotonic() >= deadline:
                break
            print(f"check-leftovers: {len(found)} still listed; looking again in {LEFTOVER_POLL_S} s", flush=True)
            sleep(LEFTOVER_POLL_S)
    except (PurgeFailed, HttpResponseError) as error:
        print(f"check-leftovers: {error}", file=sys.stderr)
        return 1
    for item in found:
        print(f"left over: {item}")
    if found:
        print(f"check-leftovers: {len(found)} resource(s) tagged stack={args.stack} are left", file=sys.stderr)
        return 1
    print(f"check-leftovers: nothing tagged stack={args.stack} in subscription {subscription}")
    return 0


SUBCOMMANDS = {"check-endpoints": check_endpoints_main, "check-leftovers": check_leftovers_main}


def main(argv: list[str] | None = None, runner: Runner = run_command) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    parser = argparse.ArgumentParser(prog="python -m infra.e2e", description=__doc__.split("\n\n")[0],
                                     epilog="checks: python -m infra.e2e check-endpoints|check-leftovers --help")
    parser.add_argument("--dry-run", action="store_true", help="print every step and its exact commands; run nothing")
    parser.add_argument("--stack", help=f"the e2e stack's name (default: a new {STACK_PREFIX}<{STACK_HEX} hex>)")
    parser.add_argument("--base-stack", default=DEFAULT_BASE, help="whose Pulumi.<stack>.yaml to copy (default: dev)")
    parser.add_argument("--github-environment", default=DEFAULT_ENVIRONMENT,
                        help="the GitHub environment the run signs in from (default: e2e)")
    parser.add_argument("--keep", action="store_true", help="leave the stack up (tear it down later with --teardown)")
    parser.add_argument("--teardown", action="store_true", help="only tear down --stack (after --keep or a cancel)")
    parser.add_argument("--budget-minutes", type=float, default=BUDGET_MINUTES,
                        help=f"the whole run's time, teardown included (default: {BUDGET_MINUTES}; 0: no limit)")
    parser.add_argument("--work-dir", type=Path, help="for the config and outputs files (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.teardown and not args.stack:
        parser.error("--teardown needs --stack NAME")
    stack = args.stack or new_stack_name()
    try:
        config = e2e_config(stack, args.base_stack, args.github_environment)
    except E2EInputError as error:
        print(f"e2e: {error}", file=sys.stderr)
        return 2
    work_dir = args.work_dir or Path(tempfile.gettempdir()) / f"{PROJECT}-{stack}"
    run = EndToEnd(stack, args.base_stack, config, work_dir, runner=runner, dry_run=args.dry_run, keep=args.keep,
                   budget_minutes=args.budget_minutes)
    return run.run_teardown() if args.teardown else run.run()


if __name__ == "__main__":
    sys.exit(main())
