"""infra.review on preview digests in the shape `pulumi preview --json` writes (tests/fixtures/preview)."""

import json
from pathlib import Path

import pytest

from infra import review
from infra.stacks import PROTECT_KEY, is_protected, stack_config

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "preview"


def run(path, *extra, config_dir=ROOT):
    """The review as CI runs it: against the repository's own Pulumi.<stack>.yaml files by default."""
    return review.main([str(path), "--config-dir", str(config_dir), *extra])


def as_dev(fixture, tmp_path):
    """The same digest as if it were dev's: every URN moved to the dev stack."""
    path = tmp_path / f"dev-{fixture}"
    path.write_text((FIXTURES / fixture).read_text().replace("urn:pulumi:prod::", "urn:pulumi:dev::"))
    return path


def test_clean_dev_preview_passes_with_a_summary_per_type(capsys):
    assert run(FIXTURES / "dev-clean.json") == review.EXIT_OK
    out = capsys.readouterr().out
    assert "| `azure-native:operationalinsights:Workspace` | 1 | 0 | 0 | 0 |" in out
    assert "| `azure-native:storage:StorageAccount` | 0 | 1 | 0 | 0 |" in out
    assert "No replace or delete of a stateful resource." in out
    assert "ResourceGroup" not in out, "unchanged resources are not listed"


def test_replaced_workspace_in_prod_fails_naming_resource_and_reason(capsys):
    assert run(FIXTURES / "prod-workspace-replaced.json") == review.EXIT_BLOCKED
    out = capsys.readouterr().out
    assert "**replace** Azure ML workspace `workspace`" in out
    assert "azure-native:machinelearningservices:Workspace::workspace" in out
    assert "replaceReasons: `workspaceName`" in out
    assert "detailedDiff: `workspaceName` (update-replace)" in out
    assert "/workspaces/mlw-azureml-prod" in out
    assert "**Blocked.**" in out
    # create-replacement, replace and delete-replaced are one replacement
    assert "| `azure-native:machinelearningservices:Workspace` | 0 | 0 | 1 | 0 |" in out


def test_deleted_key_vault_in_prod_fails_naming_resource_and_reason(capsys):
    assert run(FIXTURES / "prod-key-vault-deleted.json") == review.EXIT_BLOCKED
    out = capsys.readouterr().out
    assert "**delete** Key Vault `key-vault`" in out
    assert "/vaults/kv-aml-prod-3fq9" in out
    assert "no longer declared by the program" in out


def test_compute_replacement_alone_is_not_flagged():
    result = review.review(json.loads((FIXTURES / "prod-workspace-replaced.json").read_text()))
    assert [flag.type for flag in result.flags] == ["azure-native:machinelearningservices:Workspace"]


@pytest.mark.parametrize("fixture", ["prod-workspace-replaced.json", "prod-key-vault-deleted.json"])
def test_explicit_override_lets_prod_pass_and_says_so(capsys, fixture):
    assert run(FIXTURES / fixture, "--allow-stateful-changes") == review.EXIT_OK
    assert "**Overridden**" in capsys.readouterr().out


def test_flags_in_an_unprotected_stack_are_reported_but_do_not_block(tmp_path, capsys):
    assert run(as_dev("prod-key-vault-deleted.json", tmp_path)) == review.EXIT_OK
    out = capsys.readouterr().out
    assert "**delete** Key Vault `key-vault`" in out and "Not blocking" in out


def test_a_stack_whose_config_sets_protect_is_guarded_like_prod(tmp_path):
    (tmp_path / "Pulumi.dev.yaml").write_text(f"config:\n  {PROTECT_KEY}: true\n")
    preview = as_dev("prod-workspace-replaced.json", tmp_path)
    assert run(preview, config_dir=tmp_path) == review.EXIT_BLOCKED


def test_prod_stays_protected_even_if_its_config_drops_the_key(tmp_path):
    (tmp_path / "Pulumi.prod.yaml").write_text("config: {}\n")
    assert run(FIXTURES / "prod-key-vault-deleted.json", config_dir=tmp_path) == review.EXIT_BLOCKED


def mutated(fixture, change):
    digest = json.loads((FIXTURES / fixture).read_text())
    change(digest)
    return json.dumps(digest)


@pytest.mark.parametrize("content, message", [
    ((FIXTURES / "truncated.json").read_text(), "not JSON"),
    ("[]", "expected the JSON object"),
    ("{}", "no 'steps'"),
    (mutated("dev-clean.json", lambda d: d.pop("changeSummary")), "'changeSummary'"),
    (mutated("dev-clean.json", lambda d: d["steps"][3].update(op="rename")), "unknown op 'rename'"),
    (mutated("dev-clean.json", lambda d: d["steps"][3].update(urn="storage")), "not a Pulumi URN"),
    (mutated("dev-clean.json", lambda d: d["steps"][3].update(replaceReasons="tags")), "replaceReasons must be a list"),
    (mutated("dev-clean.json", lambda d: d["steps"][3].update(detailedDiff={"tags.owner": "add"})),
     "detailedDiff must map"),
    (mutated("dev-clean.json", lambda d: d.update(diagnostics=[
        {"message": "error: resource partially created", "severity": "error"}])), "the preview failed"),
    (mutated("dev-clean.json", lambda d: d["steps"][3].update(
        urn=d["steps"][3]["urn"].replace(":dev::", ":prod::"))), "several stacks"),
])
def test_malformed_or_failed_previews_are_errors_never_a_pass(tmp_path, capsys, content, message):
    path = tmp_path / "preview.json"
    path.write_text(content)
    assert run(path) == review.EXIT_INVALID
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_a_preview_of_another_stack_than_expected_is_an_error(capsys):
    assert run(FIXTURES / "dev-clean.json", "--stack", "prod") == review.EXIT_INVALID
    assert "is of stack 'dev', not 'prod'" in capsys.readouterr().err


def test_a_missing_stack_config_is_an_error(tmp_path, capsys):
    assert run(FIXTURES / "dev-clean.json", config_dir=tmp_path) == review.EXIT_INVALID
    assert "Pulumi.dev.yaml" in capsys.readouterr().err


def test_the_repositorys_stacks_are_read_as_the_program_reads_them():
    assert not is_protected("dev", ROOT)
    assert stack_config("prod", ROOT)[PROTECT_KEY] is True
