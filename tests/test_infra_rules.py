"""Every rule (security, platform constraint, style) holds on every stack, and each one catches a violation."""

import pytest

from infra import conformance, outputs, rules, security
from rule_cases import cases, entries, rule_stack
from stack_harness import POLICY_STACK, engine_outputs, every_stack, run_stack

# the stack files, and each with a team (workstations and the team's grants: none are in the files)
STACKS = every_stack()
CASES = cases()
RULES = {registered.name: registered for registered in rules.rules()}


KEEPING = [kind for kind in rules.KINDS if kind != "conformance"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_keeps_every_rule(stack):
    """Every rule holds, but for the advisory report of the Azure Policy findings the platform keeps (next test)."""
    run = run_stack(stack)
    assert rules.violations(run.rule_resources(), KEEPING) == []
    assert security.output_violations(run.outputs, run.secret_outputs, run.dropped_outputs) == []


@pytest.mark.parametrize("stack", ["dev", "prod", POLICY_STACK])
def test_kept_policy_findings_are_reported_until_an_exemption_declares_them(stack):
    run = run_stack(stack)
    reported = rules.violations(run.rule_resources(), ["conformance"])
    exempt = {r.inputs["metadata"]["policyDefinitionId"].rsplit("/", 1)[-1] for r in run.of_type(conformance.EXEMPTION)}
    kept = conformance.kept(run.stack)
    assert len(reported) == len([finding for finding in kept if finding.definition not in exempt])
    assert all(f"({f.definition}" not in line for f in kept if f.definition in exempt for line in reported)
    assert bool(exempt) == (stack == POLICY_STACK)  # none without an assignment
    assert (reported == []) == (stack == POLICY_STACK)  # the enterprise there assigns every definition kept


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule_catches_a_violation(case):
    rule = RULES[case.rule]
    items = entries(run_stack(case.stack))
    assert rule.check(rule_stack(items)) == []
    found = rule.check(rule_stack(case.edit(items)))
    assert any(case.says in line for line in found), found


def test_every_rule_has_a_violating_case():
    assert {case.rule for case in CASES} == set(RULES)


def test_rules_are_named_once_and_platform_rules_quote_their_source():
    names = [registered.name for registered in rules.rules()]
    assert len(names) == len(set(names))
    assert {registered.kind for registered in rules.rules()} == set(rules.KINDS)
    for registered in rules.rules("platform"):
        assert '"' in registered.source and "(" in registered.source, f"{registered.name}: quote the page and sentence"


def test_rules_say_nothing_about_what_a_preview_cannot_know():
    """An unknown scope or principal (a resource not created yet) is neither a violation nor a crash."""
    run = run_stack("prod")
    unknown = [
        rules.Resource(**{**vars(r), "inputs": {**r.inputs, "scope": rules.UNKNOWN, "principalId": rules.UNKNOWN}})
        if r.type == security.ROLE_ASSIGNMENT else r
        for r in run.rule_resources()
    ]  # fmt: skip
    assert rules.violations(unknown, KEEPING) == []


def test_plain_text_secret_outputs_are_caught():
    exports = {outputs.WORKSPACE: "mlw", outputs.AUTOMATION_CLIENT_SECRET: "s3cret", "storage_connection_string": "x"}
    assert security.output_violations(exports, secret_keys={outputs.AUTOMATION_CLIENT_SECRET}) == [
        "stack output 'storage_connection_string' must be exported as a Pulumi secret"
    ]
    assert security.output_violations(exports, secret_keys=set()) == [
        f"stack output '{outputs.AUTOMATION_CLIENT_SECRET}' must be exported as a Pulumi secret",
        "stack output 'storage_connection_string' must be exported as a Pulumi secret",
    ]


def test_an_export_of_none_is_dropped_as_the_engine_drops_it_and_caught():
    run_stack("dev")  # the mock monitor the serialization needs
    exports = {outputs.CPU_CLUSTER: "cpu-cluster", outputs.GPU_CLUSTER: None}
    serialized, _ = engine_outputs(exports)
    assert serialized == {outputs.CPU_CLUSTER: "cpu-cluster"}
    dropped = set(exports) - set(serialized)
    assert security.output_violations(serialized, set(), dropped) == [
        f"stack output '{outputs.GPU_CLUSTER}' is None, which the engine drops: export it only when it has a value "
        "(infra/outputs.py, OPTIONAL)"
    ]
