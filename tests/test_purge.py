"""infra.purge against a fake ARM: azure-core's real requests transport over an in-memory adapter, so every
request goes through the same pipeline (auth, retry, LRO polling) it takes against management.azure.com."""

import json
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest

from infra import outputs as keys
from infra import purge
from stack_harness import ROOT, run_stack
from tests.arm_fake import TOKEN, FakeArm, FakeCredential

OTHER_STACK_TAGS = {"project": "azureml-platform", "stack": "qa", "managed-by": "pulumi"}


@dataclass(frozen=True)
class Dev:
    """The dev stack as the real program declares it (evaluated under mocks): purge is held to what it deploys."""

    outputs: dict
    secret_outputs: frozenset
    subscription: str
    group: str
    location: str
    workspace: str
    vault: str
    vault_tags: dict
    workspace_tags: dict

    @property
    def vault_record(self):
        return (f"/subscriptions/{self.subscription}/providers/Microsoft.KeyVault"
                f"/locations/{self.location}/deletedVaults/{self.vault}")

    @property
    def workspace_id(self):
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}")

    @property
    def poll(self):
        return f"https://management.azure.com/subscriptions/{self.subscription}/providers/Microsoft.KeyVault/ops/1"

    def deleted_vault(self, tags=None, vault_group=None, purge_protection=False):
        return {"id": self.vault_record, "name": self.vault, "type": "Microsoft.KeyVault/deletedVaults", "properties": {
            "vaultId": f"/subscriptions/{self.subscription}/resourceGroups/{vault_group or self.group}"
                       f"/providers/Microsoft.KeyVault/vaults/{self.vault}",
            "location": self.location,
            "tags": self.vault_tags if tags is None else tags,
            "deletionDate": "2026-11-23T02:00:00Z", "scheduledPurgeDate": "2027-02-21T02:00:00Z",
            "purgeProtectionEnabled": purge_protection}}

    def live_workspace(self, tags=None):
        return {"id": self.workspace_id, "name": self.workspace, "location": self.location,
                "type": "Microsoft.MachineLearningServices/workspaces",
                "tags": self.workspace_tags if tags is None else tags}


@pytest.fixture(scope="module")
def dev():
    program = run_stack("dev")
    vault = program.one("azure-native:keyvault:Vault")
    workspace = program.one("azure-native:machinelearningservices:Workspace")
    outputs = dict(program.outputs)
    return Dev(outputs, program.secret_outputs, outputs[keys.SUBSCRIPTION_ID], outputs[keys.RESOURCE_GROUP],
               outputs[keys.LOCATION], outputs[keys.WORKSPACE], vault.inputs["vaultName"], vault.inputs["tags"],
               workspace.inputs["tags"])


@pytest.fixture
def stack_dir(tmp_path, dev):
    """What the teardown hands purge: `pulumi stack output --json` of the dev stack, saved before destroy."""
    outputs = {key: "[secret]" if key in dev.secret_outputs else value for key, value in dev.outputs.items()}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    return tmp_path


def run(stack_dir, routes, *extra, stack="dev", config_dir=ROOT):
    """purge as the teardown runs it, against the repository's own Pulumi.<stack>.yaml files by default."""
    arm = FakeArm(routes)
    argv = ["--stack", stack, "--outputs", str(stack_dir / "outputs.json"), "--config-dir", str(config_dir), *extra]
    code = purge.main(argv, credential=FakeCredential(), transport=arm.transport())
    return code, arm


def test_purges_the_stacks_vault_and_workspace_and_waits_for_the_operations(dev, stack_dir, capsys, monkeypatch):
    monkeypatch.setattr(purge, "POLLING_INTERVAL_S", 0)
    routes = {
        ("GET", dev.vault_record): dev.deleted_vault(),
        ("POST", dev.vault_record + "/purge"): (202, None, {"Location": dev.poll}),
        ("GET", urlparse(dev.poll).path): (200, None),
        ("DELETE", dev.workspace_id): (200, None),
    }
    code, arm = run(stack_dir, routes)
    assert code == 0, capsys.readouterr()
    assert arm.writes() == [("POST", dev.vault_record + "/purge"), ("DELETE", dev.workspace_id)]
    delete = next(call for call in arm.calls if call.method == "DELETE")
    assert delete.query["forceToPurge"] == ["true"] and delete.query["api-version"] == [purge.ML_API]
    assert urlparse(dev.poll).path in arm.paths("GET"), "the purge LRO was not awaited"
    assert all(call.authorization == f"Bearer {TOKEN}" for call in arm.calls)
    out = capsys.readouterr().out
    assert f"Key Vault {dev.vault}: purged" in out and f"Azure ML workspace {dev.workspace}: purged" in out


def test_dry_run_lists_what_it_would_purge_and_changes_nothing(dev, stack_dir, capsys):
    code, arm = run(stack_dir, {("GET", dev.vault_record): dev.deleted_vault()}, "--dry-run")
    assert code == 0
    assert arm.writes() == []
    out = capsys.readouterr().out
    assert f"Key Vault {dev.vault}: would purge" in out and f"Azure ML workspace {dev.workspace}: would purge" in out


def test_nothing_soft_deleted_is_not_an_error(dev, stack_dir, capsys):
    code, arm = run(stack_dir, {})
    assert code == 0
    assert arm.writes() == [("DELETE", dev.workspace_id)]
    assert capsys.readouterr().out.count("nothing to purge") == 2


@pytest.mark.parametrize("record, why", [
    ({"tags": OTHER_STACK_TAGS}, "tags"),
    ({"tags": {}}, "tags"),
    ({"vault_group": "someone-elses-rg"}, "someone-elses-rg"),
    ({"purge_protection": True}, "purge protection"),
])
def test_never_purges_a_vault_that_is_not_the_stacks(dev, stack_dir, capsys, record, why):
    code, arm = run(stack_dir, {("GET", dev.vault_record): dev.deleted_vault(**record)})
    assert code == 1
    assert ("POST", dev.vault_record + "/purge") not in arm.writes()
    out = capsys.readouterr().out
    assert f"Key Vault {dev.vault}: refused" in out and why in out


def test_before_destroy_the_stacks_live_workspace_is_deleted_for_good(dev, stack_dir, capsys):
    routes = {("GET", dev.workspace_id): dev.live_workspace(), ("DELETE", dev.workspace_id): (200, None)}
    code, arm = run(stack_dir, routes)
    assert code == 0
    assert arm.writes() == [("DELETE", dev.workspace_id)]
    assert next(call for call in arm.calls if call.method == "DELETE").query["forceToPurge"] == ["true"]
    out = capsys.readouterr().out
    assert f"Azure ML workspace {dev.workspace}: purged (deleted permanently" in out
    assert f"Key Vault {dev.vault}: nothing to purge" in out  # the vault is still live until destroy


def test_dry_run_on_a_live_workspace_changes_nothing(dev, stack_dir, capsys):
    code, arm = run(stack_dir, {("GET", dev.workspace_id): dev.live_workspace()}, "--dry-run")
    assert code == 0 and arm.writes() == []
    assert "would purge (live: would delete it permanently" in capsys.readouterr().out


@pytest.mark.parametrize("tags", [{}, OTHER_STACK_TAGS])
def test_never_deletes_a_live_workspace_without_the_stacks_tags(dev, stack_dir, capsys, tags):
    code, arm = run(stack_dir, {("GET", dev.workspace_id): dev.live_workspace(tags)})
    assert code == 1 and arm.writes() == []
    assert f"Azure ML workspace {dev.workspace}: refused (it does not carry stack 'dev' tags" in capsys.readouterr().out


def test_refuses_prod_before_any_request(dev, stack_dir, capsys):
    code, arm = run(stack_dir, {("GET", dev.vault_record): dev.deleted_vault()}, stack="prod")
    assert code == 1
    assert arm.calls == []
    assert "stack 'prod' is protected" in capsys.readouterr().err


@pytest.mark.parametrize("stack, protect", [("staging", "true"), ("prod", "false")])
def test_refuses_a_stack_that_protects_itself_and_prod_whatever_its_config(dev, stack_dir, capsys, stack, protect):
    (stack_dir / f"Pulumi.{stack}.yaml").write_text(f"config:\n  azureml-platform:protect: {protect}\n")
    code, arm = run(stack_dir, {}, stack=stack, config_dir=stack_dir)
    assert code == 1 and arm.calls == []
    assert f"stack '{stack}' is protected" in capsys.readouterr().err


def test_a_stack_without_config_file_is_refused(dev, stack_dir, capsys):
    code, arm = run(stack_dir, {}, stack="qa")
    assert code == 2 and arm.calls == []
    assert "Pulumi.qa.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("{not json", "not the JSON"),
    (json.dumps({keys.SUBSCRIPTION_ID: "00000000-0000-0000-0000-000000000000"}), f"'{keys.RESOURCE_GROUP}' is missing"),
])
def test_unusable_outputs_name_the_problem(dev, stack_dir, capsys, content, message):
    (stack_dir / "outputs.json").write_text(content)
    code, arm = run(stack_dir, {})
    assert code == 2 and arm.calls == []
    assert message in capsys.readouterr().err


def test_an_arm_error_names_the_resource_and_the_arm_code(dev, stack_dir, capsys):
    routes = {
        ("GET", dev.vault_record): dev.deleted_vault(),
        ("POST", dev.vault_record + "/purge"): (403, {"error": {"code": "AuthorizationFailed", "message": "no"}}),
    }
    code, arm = run(stack_dir, routes)
    assert code == 1
    assert f"Key Vault {dev.vault}: HTTP 403 AuthorizationFailed" in capsys.readouterr().err
    assert ("DELETE", dev.workspace_id) not in arm.writes()


def test_a_workspace_whose_resource_group_is_gone_is_reported_not_skipped(dev, stack_dir, capsys):
    gone = {"error": {"code": "ResourceGroupNotFound", "message": f"Resource group '{dev.group}' could not be found."}}
    code, _ = run(stack_dir, {("DELETE", dev.workspace_id): (404, gone)})
    assert code == 1
    assert f"resource group {dev.group} is gone" in capsys.readouterr().out
