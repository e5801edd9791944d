"""The Azure Policy exemptions a stack declares for the findings it keeps (infra/conformance.py), and their settings."""

import datetime
from pathlib import Path

import pytest

from infra import conformance, settings
from infra.settings import PROJECT
from stack_harness import MCSB_ASSIGNMENT, POLICY_STACK, only_problem, policy_config, run_stack, stack_config, with_setting

POLICY = f"{PROJECT}:policy"
TOMORROW = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()


def test_each_kept_finding_is_exempt_on_its_own_resource_under_each_assignment_that_covers_it():
    run = run_stack(POLICY_STACK)
    assignments = settings.parse(run.config, "prod").policy.assignments
    exemptions = run.of_type(conformance.EXEMPTION)
    by_definition = {}
    for exemption in exemptions:
        by_definition.setdefault(exemption.inputs["metadata"]["policyDefinitionId"].rsplit("/", 1)[-1], []).append(exemption)
    assert set(by_definition) == {finding.definition for finding in conformance.kept("prod")}
    resource_ids = {r.id for r in run.resources}
    expires = f"{settings.parse(run.config, 'prod').policy.exemptions_expire_on}T00:00:00Z"
    for finding in conformance.kept("prod"):
        found = by_definition[finding.definition]
        covering = [a for a in assignments if conformance.exempted(finding, a)]
        assert sorted(e.inputs["policyAssignmentId"] for e in found) == sorted(a.id for a in covering)
        for exemption in found:
            inputs = exemption.inputs
            assert inputs["scope"] in resource_ids and f"/providers/{conformance.TARGETS[finding.target]}/" in inputs["scope"]
            assert exemption.id.startswith(inputs["scope"] + "/providers/Microsoft.Authorization/policyExemptions/")
            assert inputs["exemptionCategory"] == "Waiver" and inputs["expiresOn"] == expires
            if inputs["policyAssignmentId"] == MCSB_ASSIGNMENT:
                assert inputs["policyDefinitionReferenceIds"] == [finding.mcsb_reference]
            else:
                assert "policyDefinitionReferenceIds" not in inputs  # a single definition's assignment
            assert len(inputs["displayName"]) <= conformance.DISPLAY_NAME_LIMIT
            assert len(inputs["description"]) <= conformance.DESCRIPTION_LIMIT and finding.source in inputs["description"]
            assert inputs["metadata"]["reason"] == finding.reason and inputs["metadata"]["fixCost"] == finding.fix_cost
    assert len({e.id for e in exemptions}) == len(exemptions)


def test_the_three_mcsb_findings_prod_keeps_are_exempt_under_the_initiative():
    """MCSB assigns these with an effect other than Disabled; the storage one is two definitions of one property."""
    run = run_stack(POLICY_STACK)
    initiative = [e for e in run.of_type(conformance.EXEMPTION) if e.inputs["policyAssignmentId"] == MCSB_ASSIGNMENT]
    references = {e.inputs["policyDefinitionReferenceIds"][0] for e in initiative}
    assert {"azureMachineLearningWorkspacesShouldDisablePublicNetworkAccess", "storageAccountsShouldPreventSharedKeyAccess",
            "storageAccountsShouldPreventSharedKeyAccessExDataBricks", "kubernetesServiceAuthorizedIPRangesEnabledMonitoring"} <= references


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_assignment_no_exemption(stack):
    assert run_stack(stack).of_type(conformance.EXEMPTION) == []


@pytest.mark.parametrize(
    "policy, problem",
    [
        ({"assignments": [{"id": MCSB_ASSIGNMENT, "kind": "initiative"}]}, "policy.exemptionsExpireOn is required"),
        ({**policy_config(TOMORROW), "exemptionsExpireOn": datetime.date.today().isoformat()}, "not after today"),
        ({**policy_config(TOMORROW), "exemptionsExpireOn": "2027-02-30"}, "not a date"),
        ({"assignments": [{"id": "/subscriptions/x/policyAssignments/mcsb", "kind": "initiative"}], "exemptionsExpireOn": TOMORROW},
         "policy.assignments[0].id"),
        ({"assignments": [{"id": MCSB_ASSIGNMENT, "kind": "definition"}], "exemptionsExpireOn": TOMORROW},
         "policy.assignments[0].definitionId is required"),
        ({"assignments": [{"id": MCSB_ASSIGNMENT, "kind": "set"}], "exemptionsExpireOn": TOMORROW}, "allowed: initiative, definition"),
        ({**policy_config(TOMORROW), "expires": TOMORROW}, "policy.expires is not a known setting"),
    ],
)
def test_policy_settings_are_refused_naming_the_key(policy, problem):
    assert problem in only_problem(with_setting(stack_config("prod"), POLICY, policy), "prod")


# --- the security page's tables, held to the code and to the evaluation ---------------------------------------------

SECURITY_PAGE = Path(__file__).resolve().parent.parent / "docs" / "security.md"


def kept_rows() -> list[str]:
    """The security page's kept findings: one row per definition and resource, with the environments that keep it."""
    rows = []
    for finding in conformance.KEPT:
        where = " and ".join(finding.environments) if finding.environments != conformance.BOTH else "both"
        rows.append(f"| {finding.title} | {finding.target} | {where} | {finding.mcsb_reference and 'yes' or 'no'} | "
                    f"{finding.reason} ({finding.source}) | {finding.fix_cost} |")
    return rows


def mcsb_rows(catalog, findings_by_stack) -> list[str]:
    """The security page's MCSB table: each assigned definition, per environment met, exempt or not applicable."""
    from infra import azure_policy as ap

    kept = {(finding.definition, environment) for environment in ("dev", "prod") for finding in conformance.kept(environment)}
    live = {(finding.definition, environment) for environment in ("dev", "prod") for finding in conformance.kept(environment)
            if not finding.in_request}  # fmt: skip
    rows = []
    for definition in sorted((d for d in catalog.definitions if d.mcsb), key=lambda d: d.mcsb.reference_id.lower()):
        cells = []
        for stack, findings in findings_by_stack.items():
            outcomes = {f.outcome for f in findings if f.definition.id == definition.id}
            if (definition.id, stack) in live:
                cells.append("exempt (found only once Azure fills the resource in)")
            elif ap.Outcome.NON_COMPLIANT in outcomes:
                cells.append("exempt" if (definition.id, stack) in kept else "NOT MET")
            elif ap.Outcome.NOT_EVALUABLE in outcomes:
                cells.append("not evaluable (outside the stack)")
            elif outcomes:
                cells.append("met")
            else:
                cells.append("not applicable")
        rows.append(f"| `{definition.mcsb.reference_id}` | {definition.display_name} | {definition.mcsb.effect} | {' | '.join(cells)} |")
    return rows


def test_the_security_page_lists_every_kept_finding_with_its_reason():
    text = SECURITY_PAGE.read_text()
    assert [row for row in kept_rows() if row not in text] == []


def test_the_security_page_marks_every_mcsb_policy_as_the_evaluation_finds_it():
    from infra import azure_policy as ap
    from test_azure_policy import arm_resources, load_reference

    catalog = load_reference()
    findings = {stack: ap.evaluate(catalog, arm_resources(run_stack(stack))) for stack in ("dev", "prod")}
    rows = mcsb_rows(catalog, findings)
    assert not [row for row in rows if "NOT MET" in row]
    text = SECURITY_PAGE.read_text()
    assert [row for row in rows if row not in text] == []
