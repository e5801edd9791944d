"""infra/azure_policy.py: the offline evaluator of Azure Policy rules, on small inline definitions, and the stacks
judged against Microsoft's built-in definitions (the reference folder, when it is here)."""

import json
import os
from pathlib import Path

import pytest

from infra import azure_policy as ap, conformance
from infra.azure_policy import ArmResource, Catalog, Outcome
from stack_harness import every_stack, revealed, run_stack

# Microsoft's definitions are never copied into the repo: the shared folder beside it holds them (or AZURE_POLICIES_DIR)
REFERENCE = Path(os.environ.get("AZURE_POLICIES_DIR")
                 or Path(__file__).resolve().parents[2] / "shared" / "azure_policies")
FETCH_HINT = (f"no reference definitions at {REFERENCE}: fetch them with "
              f"`python -m infra.azure_policy fetch --into {REFERENCE}` (or set AZURE_POLICIES_DIR)")

SUB = "00000000-0000-4000-8000-000000000001"
T = "Microsoft.Test/things"
DIAG = "Microsoft.Insights/diagnosticSettings"
ACR = "Microsoft.ContainerRegistry/registries"
STORAGE = "Microsoft.Storage/storageAccounts"
ALIASES = {
    f"{T}/flag": "properties.flag",
    f"{T}/text": "properties.text",
    f"{T}/size": "properties.size",
    f"{T}/period": "properties.period",
    f"{T}/rules[*]": "properties.rules[*]",
    f"{T}/rules[*].value": "properties.rules[*].value",
    f"{T}/rules[*].ports[*]": "properties.rules[*].ports[*]",
    f"{DIAG}/logs[*]": "properties.logs[*]",
    f"{DIAG}/logs[*].enabled": "properties.logs[*].enabled",
    f"{ACR}/privateEndpointConnections[*]": "properties.privateEndpointConnections[*]",
    f"{ACR}/privateEndpointConnections[*].privateLinkServiceConnectionState.status":
        "properties.privateEndpointConnections[*].properties.privateLinkServiceConnectionState.status",
    f"{STORAGE}/allowSharedKeyAccess": "properties.allowSharedKeyAccess",
    f"{STORAGE}/privateEndpointConnections/privateLinkServiceConnectionState.status":
        "properties.privateLinkServiceConnectionState.status",
    f"{STORAGE}/blobServices/deleteRetentionPolicy.enabled": "properties.deleteRetentionPolicy.enabled",
}


def catalog(*definitions):
    return Catalog(tuple(definitions), {alias.lower(): path for alias, path in ALIASES.items()})


def definition(condition, effect="Audit", name="d1", details=None, mcsb=None, parameters=None, of_type=T):
    """A definition whose `if` is `type == of_type` and `condition`."""
    then = {"effect": "[parameters('effect')]", **({"details": details} if details else {})}
    is_type = {"field": "type", "equals": of_type}
    rule_if = {"allOf": [is_type, condition]} if condition else is_type
    data = {"name": name, "id": f"/providers/Microsoft.Authorization/policyDefinitions/{name}", "properties": {
        "displayName": f"definition {name}", "mode": "Indexed",
        "parameters": {"effect": {"type": "String", "defaultValue": effect}, **(parameters or {})},
        "policyRule": {"if": rule_if, "then": then}}}
    return ap.parse_definition(data, f"Test/{name}.json", mcsb or {})


def resource_id(kind, name, group="rg"):
    return f"/subscriptions/{SUB}/resourceGroups/{group}/providers/{kind}/{name}"


def thing(name="t1", group="rg", tags=None, **properties):
    arm_id = resource_id(T, name, group)
    body = {"id": arm_id, "name": name, "type": T, "location": "westeurope", "tags": tags or {},
            "properties": properties}
    return ArmResource(arm_id, T, name, body, api_version="2024-01-01")


def outcomes(definitions, resources):
    return [(f.definition.id, f.resource.name, f.outcome) for f in ap.evaluate(catalog(*definitions), resources)]


def judge(condition, *others, **properties):
    """The outcome of `type == T and condition` for a thing with these properties (NON_COMPLIANT: it holds)."""
    findings = ap.evaluate(catalog(definition(condition)), [thing(**properties), *others])
    [finding] = [f for f in findings if f.resource.type == T]
    return finding


def holds(condition, **properties):
    outcome = judge(condition, **properties).outcome
    assert outcome in (Outcome.NON_COMPLIANT, Outcome.COMPLIANT), judge(condition, **properties).reason
    return outcome is Outcome.NON_COMPLIANT


# --- conditions -----------------------------------------------------------------------------------------------------

def f(alias, **condition):
    return {"field": f"{T}/{alias}", **condition}


@pytest.mark.parametrize("condition, properties, expected", [
    (f("text", equals="HELLO"), {"text": "hello"}, True),  # string comparisons ignore case
    (f("text", notEquals="hello"), {}, True),  # a missing value equals nothing
    (f("text", equals="hello"), {}, False),
    (f("text", like="he*O"), {"text": "Hello"}, True),
    (f("text", notLike="x*"), {"text": "hello"}, True),
    (f("text", match="##-??"), {"text": "12-ab"}, True),
    (f("text", match="ab-.."), {"text": "AB-12"}, False),  # match is case-sensitive
    (f("text", matchInsensitively="ab-.."), {"text": "AB-12"}, True),
    (f("text", notMatch="#"), {"text": "a"}, True),
    (f("text", notMatchInsensitively="A"), {"text": "a"}, False),
    (f("text", contains="ELL"), {"text": "hello"}, True),
    (f("text", notContains="ELL"), {}, True),
    (f("text", **{"in": ["a", "B"]}), {"text": "b"}, True),
    (f("text", notIn=["a", "b"]), {}, True),
    ({"field": "tags", "containsKey": "ENV"}, {"tags": {"env": "dev"}}, True),
    ({"field": "tags", "notContainsKey": "team"}, {"tags": {"env": "dev"}}, True),
    ({"field": "tags['env']", "equals": "dev"}, {"tags": {"env": "dev"}}, True),
    (f("size", less=7), {"size": 5}, True),
    (f("size", lessOrEquals=5), {"size": 5}, True),
    (f("size", greater=5), {"size": 5}, False),
    (f("size", greaterOrEquals=5), {"size": 5.0}, True),
    (f("size", less=7), {}, False),  # a missing value orders before nothing
    (f("text", greaterOrEquals="2019-04-01"), {"text": "2024-01-01"}, True),
    (f("size", exists="false"), {}, True),
    (f("flag", exists=True), {"flag": False}, True),
    (f("flag", equals="true"), {"flag": True}, True),  # "true" equals true
    (f("flag", equals="True"), {"flag": False}, False),
    (f("size", equals="0"), {"size": 0}, True),
    ({"not": f("text", equals="a")}, {"text": "a"}, False),
    ({"anyOf": [f("text", equals="a"), f("text", equals="b")]}, {"text": "b"}, True),
    ({"anyof": [f("text", Like="a*")]}, {"text": "ab"}, True),  # keys are case-insensitive, as the built-ins spell them
])
def test_condition_operators(condition, properties, expected):
    assert holds(condition, **properties) is expected


def test_ordering_values_of_different_types_is_unresolved():
    finding = judge(f("size", greater="3"), size=5)  # Azure throws when the types differ
    assert finding.outcome is Outcome.UNRESOLVED and "types differ" in finding.reason


@pytest.mark.parametrize("rules, condition, expected", [
    ([{"value": "a"}, {"value": "a"}], f("rules[*].value", equals="a"), True),  # holds for every member
    ([{"value": "a"}, {"value": "b"}], f("rules[*].value", equals="a"), False),
    ([{"value": "a"}, {"value": "b"}], f("rules[*].value", notEquals="c"), True),
    ([{"value": "a"}, {"value": "b"}], {"not": f("rules[*].value", equals="a")}, True),
    (None, f("rules[*].value", equals="a"), False),  # a missing array: a condition on a value that does not exist
    (None, f("rules[*].value", exists="false"), True),
    ([], f("rules[*].value", exists="true"), False),
    (None, f("rules[*].value", notEquals="a"), True),
])
def test_a_field_condition_on_a_star_alias_must_hold_for_every_member(rules, condition, expected):
    properties = {} if rules is None else {"rules": rules}
    assert holds(condition, **properties) is expected


RULES = [{"value": "a", "ports": [22, 80]}, {"value": "b", "ports": [443]}, {"value": "a"}]


@pytest.mark.parametrize("condition, expected", [
    ({"count": {"field": f"{T}/rules[*]"}, "equals": 3}, True),
    ({"count": {"field": f"{T}/rules[*]", "where": f("rules[*].value", equals="a")}, "equals": 2}, True),
    ({"count": {"field": f"{T}/rules[*]", "where": f("rules[*].value", equals="a")}, "less": 2}, False),
    ({"count": {"field": f"{T}/rules[*]", "where": {  # current() of a property of the counted member
        "value": f"[current('{T}/rules[*].value')]", "equals": "b"}}, "equals": 1}, True),
    ({"count": {"field": f"{T}/rules[*]", "where": {  # nested: members with a port 22
        "count": {"field": f"{T}/rules[*].ports[*]", "where": f("rules[*].ports[*]", equals=22)}, "greater": 0}},
      "equals": 1}, True),
    ({"count": {"field": f"{T}/rules[*].ports[*]"}, "equals": 3}, True),  # members of nested arrays, flattened
    ({"count": {"field": f"{T}/rules[*]"}, "equals": f"[length(field('{T}/rules[*]'))]"}, True),
    ({"count": {"value": ["x*", "t*"], "name": "pattern", "where": {"field": "name", "like": "[current('pattern')]"}},
      "greater": 0}, True),
    ({"count": {"value": ["x*", "y*"], "where": {"field": "name", "like": "[current()]"}}, "greater": 0}, False),
    ({"count": {"value": "[parameters('effect')]"}, "equals": 0}, None),  # not an array: unresolved
])
def test_count(condition, expected):
    outcome = judge(condition, rules=RULES).outcome
    assert outcome is {True: Outcome.NON_COMPLIANT, False: Outcome.COMPLIANT, None: Outcome.UNRESOLVED}[expected]


def test_a_count_over_a_missing_array_is_zero():
    assert holds({"count": {"field": f"{T}/rules[*]", "where": f("rules[*].value", equals="a")}, "equals": 0})


# --- functions ------------------------------------------------------------------------------------------------------

PERIOD_DAYS = (f"[if(empty(field('{T}/period')), 99, int(split(field('{T}/period'), createArray(':', '.'))[0]))]")


@pytest.mark.parametrize("period, too_long", [("7.00:00:00", False), ("30.00:00:00", True), (None, True)])
def test_the_functions_of_the_sas_expiration_rule(period, too_long):
    properties = {"period": period} if period else {}
    assert holds({"value": PERIOD_DAYS, "greater": 7}, **properties) is too_long


@pytest.mark.parametrize("expression, expected", [
    ("[concat(toLower('AB'), padLeft(7, 3, '0'), string(length(createArray(1, 2))))]", "ab0072"),
    ("[if(equals(1, 1), 'yes', frobnicate())]", "yes"),  # only the chosen branch is evaluated
    ("[first(split('a/b', '/'))]", "a"),
    ("[last(createArray('a', 'b'))]", "b"),
    ("[replace('a-b', '-', '.')]", "a.b"),
    ("[substring('abcdef', 1, 3)]", "bcd"),
    ("[string(and(not(false), or(false, true), contains('abc', 'b')))]", "True"),
    ("[string(startsWith('Hello', 'he'))]", "True"),
    ("[string(coalesce(field('Microsoft.Test/things/text'), 'none'))]", "none"),
    ("[string(ipRangeContains('10.0.0.0/24', '10.0.0.5'))]", "True"),
    ("[string(ipRangeContains('10.0.0.0/24', '10.0.1.0-10.0.1.9'))]", "False"),
    ("[addDays('2024-01-30T00:00:00.0000000Z', 2)]", "2024-02-01T00:00:00.0000000Z"),
    ("[requestContext().apiVersion]", "2024-01-01"),
    ("[resourcegroup().name]", "rg"),
    ("[resourceGroup().managedBy]", ""),  # the group declares none
    ("[subscription().subscriptionId]", SUB),
    ("[field('fullName')]", "t1"),
    ("[createArray('it''s', 2)[0]]", "it's"),
])
def test_template_functions(expression, expected):
    assert holds({"value": expression, "equals": expected}), expression


def test_the_resource_group_is_the_one_the_stack_declares():
    group_id = f"/subscriptions/{SUB}/resourceGroups/rg"
    databricks = f"/subscriptions/{SUB}/resourceGroups/x/providers/Microsoft.Databricks/workspaces/w"
    group = ap.arm_resource("azure-native:resources:ResourceGroup", group_id,
                            {"resourceGroupName": "rg", "location": "westeurope", "managedBy": databricks})
    condition = {"value": "[resourcegroup().managedBy]", "notContains": "/providers/Microsoft.Databricks/"}
    assert judge(condition).outcome is Outcome.NON_COMPLIANT
    assert judge(condition, group).outcome is Outcome.COMPLIANT


def test_an_unknown_function_is_unresolved_with_its_name():
    finding = judge({"value": "[frobnicate(1)]", "equals": 1})
    assert finding.outcome is Outcome.UNRESOLVED and "frobnicate" in finding.reason


def test_an_alias_missing_from_the_alias_map_is_unresolved():
    finding = judge({"field": f"{T}/nope", "equals": 1})
    assert finding.outcome is Outcome.UNRESOLVED and f"{T}/nope" in finding.reason


@pytest.mark.parametrize("condition, expected", [
    ({"allOf": [f("text", equals="a"), {"field": f"{T}/nope", "equals": 1}]}, Outcome.UNRESOLVED),
    ({"anyOf": [f("text", equals="b"), {"value": "[nope()]", "equals": 1}]}, Outcome.UNRESOLVED),
    ({"not": {"field": f"{T}/nope", "equals": 1}}, Outcome.UNRESOLVED),
    ({"anyOf": [f("text", equals="a"), {"field": f"{T}/nope", "equals": 1}]}, Outcome.NON_COMPLIANT),  # decided
    ({"allOf": [f("text", equals="b"), {"field": f"{T}/nope", "equals": 1}]}, Outcome.COMPLIANT),  # decided
])
def test_an_unresolved_branch_is_never_compliant_when_it_could_decide(condition, expected):
    assert judge(condition, text="a").outcome is expected


# --- effects --------------------------------------------------------------------------------------------------------

DIAGNOSTIC_LOGS = {"type": DIAG, "existenceCondition": {
    "count": {"field": f"{DIAG}/logs[*]", "where": {"field": f"{DIAG}/logs[*].enabled", "equals": "true"}},
    "greaterOrEquals": 1}}


def diagnostic_setting(scope, enabled=True, name="to-logs"):
    workspace = resource_id("Microsoft.OperationalInsights/workspaces", "w")
    inputs = {"resourceUri": scope, "name": name, "workspaceId": workspace,
              "logs": [{"categoryGroup": "allLogs", "enabled": enabled}]}
    return ap.arm_resource("azure-native:monitor:DiagnosticSetting",
                           f"{scope}/providers/Microsoft.Insights/diagnosticSettings/{name}", inputs)


def test_audit_if_not_exists_looks_for_a_diagnostic_setting_of_the_resource():
    aine = definition(None, effect="AuditIfNotExists", details=DIAGNOSTIC_LOGS)
    one, other = thing("t1"), thing("t2")
    assert outcomes([aine], [one]) == [("d1", "t1", Outcome.NON_COMPLIANT)]
    assert outcomes([aine], [one, diagnostic_setting(one.id)])[0][2] is Outcome.COMPLIANT
    assert outcomes([aine], [one, diagnostic_setting(one.id, enabled=False)])[0][2] is Outcome.NON_COMPLIANT
    assert outcomes([aine], [one, other, diagnostic_setting(other.id)]) == [
        ("d1", "t1", Outcome.NON_COMPLIANT), ("d1", "t2", Outcome.COMPLIANT)]


def test_a_related_resource_outside_the_stack_is_not_evaluable():
    watcher = definition(None, effect="AuditIfNotExists", details={
        "type": "Microsoft.Network/networkWatchers", "resourceGroupName": "NetworkWatcherRG"})
    [finding] = ap.evaluate(catalog(watcher), [thing()])
    assert finding.outcome is Outcome.NOT_EVALUABLE and "NetworkWatcherRG" in finding.reason
    subscription = definition(None, effect="AuditIfNotExists", details={"type": "Microsoft.Security/pricings"})
    assert ap.evaluate(catalog(subscription), [thing()])[0].outcome is Outcome.NOT_EVALUABLE


def test_deploy_if_not_exists_finds_a_named_child():
    soft_delete = definition(None, effect="DeployIfNotExists", of_type=STORAGE, details={
        "type": f"{STORAGE}/blobServices", "name": "default",
        "existenceCondition": {"field": f"{STORAGE}/blobServices/deleteRetentionPolicy.enabled", "equals": True}})
    account_id = resource_id(STORAGE, "st")
    account = ap.arm_resource("azure-native:storage:StorageAccount", account_id,
                              {"resourceGroupName": "rg", "accountName": "st", "kind": "StorageV2"})
    blob = ap.arm_resource("azure-native:storage:BlobServiceProperties", f"{account_id}/blobServices/default", {
        "resourceGroupName": "rg", "accountName": "st", "blobServicesName": "default",
        "deleteRetentionPolicy": {"enabled": True, "days": 7.0}})
    assert outcomes([soft_delete], [account]) == [("d1", "st", Outcome.NON_COMPLIANT)]
    assert outcomes([soft_delete], [account, blob]) == [("d1", "st", Outcome.COMPLIANT)]


def private_endpoint(target, manual=False):
    key = "manualPrivateLinkServiceConnections" if manual else "privateLinkServiceConnections"
    endpoint_id = resource_id("Microsoft.Network/privateEndpoints", "pe")
    return ap.arm_resource("azure-native:network:PrivateEndpoint", endpoint_id, {
        "resourceGroupName": "rg", "privateEndpointName": "pe", "location": "westeurope",
        "subnet": {"id": resource_id("Microsoft.Network/virtualNetworks", "vnet") + "/subnets/pe"},
        key: [{"name": "pe", "privateLinkServiceId": target, "groupIds": ["registry"]}]})


def test_a_private_endpoint_of_the_stack_approves_its_connection():
    status = f"{ACR}/privateEndpointConnections[*].privateLinkServiceConnectionState.status"
    private_link = definition({"count": {"field": f"{ACR}/privateEndpointConnections[*]", "where": {
        "field": status, "equals": "Approved"}}, "less": 1}, of_type=ACR)
    registry_id = resource_id(ACR, "cr")
    registry = ap.arm_resource("azure-native:containerregistry:Registry", registry_id,
                               {"resourceGroupName": "rg", "registryName": "cr", "sku": {"name": "Premium"}})
    assert outcomes([private_link], [registry]) == [("d1", "cr", Outcome.NON_COMPLIANT)]
    assert outcomes([private_link], [registry, private_endpoint(registry_id)]) == [("d1", "cr", Outcome.COMPLIANT)]
    # a manual request waits for the owner's approval
    manual = private_endpoint(registry_id, manual=True)
    assert outcomes([private_link], [registry, manual]) == [("d1", "cr", Outcome.NON_COMPLIANT)]
    children = [r for r in ap.with_private_endpoint_connections([registry, private_endpoint(registry_id)])
                if r.type == f"{ACR}/privateEndpointConnections"]
    assert [(c.id, c.body["properties"]["privateLinkServiceConnectionState"]["status"]) for c in children] == [
        (f"{registry_id}/privateEndpointConnections/pe", "Approved")]


def test_an_unset_property_takes_azures_default():
    shared_key = definition({"field": f"{STORAGE}/allowSharedKeyAccess", "equals": "true"}, of_type=STORAGE)
    account = ap.arm_resource("azure-native:storage:StorageAccount", resource_id(STORAGE, "st"),
                              {"resourceGroupName": "rg", "accountName": "st"})
    [finding] = ap.evaluate(catalog(shared_key), [account])
    assert finding.outcome is Outcome.NON_COMPLIANT and "allowSharedKeyAccess=true (Azure default)" in finding.reason
    assert all(len(source) > 40 for _, source in ap.AZURE_DEFAULTS.values())  # each names where it is written


def test_no_finding_for_a_type_the_definition_does_not_target():
    assert ap.evaluate(catalog(definition(None, of_type=ACR)), [thing()]) == []


# --- summaries ------------------------------------------------------------------------------------------------------

def test_deny_and_mcsb_summaries_count_a_property_of_a_resource_once():
    mcsb = {"a": {"referenceId": "refA", "effect": "Audit"},
            "b": {"referenceId": "refB", "effect": ap.DEFINITION_DEFAULT},
            "c": {"referenceId": "refC", "effect": "Disabled"}}
    shared_key = f("flag", notEquals=False)
    same_property = [definition(shared_key, name="a", mcsb=mcsb),  # e.g. ...AllowSharedKeyAccess_Audit
                     definition({"allOf": [{"value": "[resourcegroup().managedBy]", "notContains": "Databricks"},
                                           shared_key]}, name="b", mcsb=mcsb)]  # ...WithDatabricksExcluded_Audit
    disabled = definition(f("text", exists=False), name="c", mcsb=mcsb)
    deny = definition(f("size", exists=False), name="d", effect="Deny")
    findings = ap.evaluate(catalog(*same_property, disabled, deny), [thing("t1"), thing("t2")])
    assert all(finding.outcome is Outcome.NON_COMPLIANT for finding in findings)
    assert sorted((x.definition.id, x.resource.name) for x in ap.mcsb_findings(findings)) == [("a", "t1"), ("a", "t2")]
    assert same_property[1].mcsb == ap.McsbAssignment("refB", "Audit")  # the definition's own effect
    assert [(x.definition.id, x.resource.name) for x in ap.deny_findings(findings)] == [("d", "t1"), ("d", "t2")]
    assert ap.property_key(findings[0]) == (f"{T}/flag".lower(),)
    text = ap.report(findings)
    assert "NON_COMPLIANT (8)" in text and "refA (Audit) | Microsoft.Test/things/t1 | definition a" in text


def test_the_related_type_is_part_of_the_property_judged():
    aine = definition(None, effect="AuditIfNotExists", details=DIAGNOSTIC_LOGS)
    [finding] = ap.evaluate(catalog(aine), [thing()])
    assert ap.property_key(finding) == (DIAG.lower(),)


# --- the ARM view ---------------------------------------------------------------------------------------------------

def test_arm_body_of_a_storage_account():
    account = ap.arm_resource("azure-native:storage:StorageAccount", resource_id(STORAGE, "st"), {
        "resourceGroupName": "rg", "accountName": "st", "location": "westeurope", "kind": "StorageV2",
        "sku": {"name": "Standard_LRS"}, "enableHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2",
        "networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"iPAddressOrRange": "1.2.3.4"}],
                           "virtualNetworkRules": [{"virtualNetworkResourceId": "/subnet"}]},
        "sasPolicy": {"sasExpirationPeriod": "7.00:00:00", "expirationAction": "Block"}, "retention": 30.0})
    assert account.type == STORAGE and account.name == "st" and account.api_version == "2024-01-01"
    assert account.body["kind"] == "StorageV2" and account.body["sku"] == {"name": "Standard_LRS"}
    assert account.body["properties"] == {
        "supportsHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2",
        "networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "1.2.3.4"}],
                        "virtualNetworkRules": [{"id": "/subnet"}]},
        "sasPolicy": {"sasExpirationPeriod": "7.00:00:00", "expirationAction": "Block"}, "retention": 30}


def test_arm_body_wraps_sub_resources():
    vnet_id = resource_id("Microsoft.Network/virtualNetworks", "v")
    vnet = ap.arm_resource("azure-native:network:VirtualNetwork", vnet_id, {
        "resourceGroupName": "rg", "virtualNetworkName": "v", "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
        "subnets": [{"name": "s", "addressPrefix": "10.0.0.0/24", "defaultOutboundAccess": False,
                     "delegations": [{"name": "d", "serviceName": "Microsoft.App/environments"}]}]})
    assert vnet.body["properties"]["subnets"] == [{"name": "s", "properties": {
        "addressPrefix": "10.0.0.0/24", "defaultOutboundAccess": False,
        "delegations": [{"name": "d", "properties": {"serviceName": "Microsoft.App/environments"}}]}}]


def test_arm_body_when_the_properties_input_is_arms():
    compute_id = resource_id("Microsoft.MachineLearningServices/workspaces", "w") + "/computes/c"
    compute = ap.arm_resource("azure-native:machinelearningservices:Compute", compute_id, {
        "resourceGroupName": "rg", "workspaceName": "w", "computeName": "c", "location": "westeurope",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": ["/id1"]},
        "properties": {"computeType": "AmlCompute", "properties": {"subnet": {"id": "/subnet"}}}})
    assert compute.type == "Microsoft.MachineLearningServices/workspaces/computes" and compute.name == "c"
    assert compute.body["properties"] == {"computeType": "AmlCompute", "properties": {"subnet": {"id": "/subnet"}}}
    assert compute.body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"/id1": {}}}
    assert compute.full_name == "w/c" and compute.resource_group == "rg"


def test_arm_resource_of_other_tokens():
    assert ap.arm_resource("azuread:index/application:Application", "/applications/x", {"displayName": "a"}) is None
    assert ap.arm_resource("pulumi:providers:kubernetes", "id", {}) is None
    inputs = {"resourceGroupName": "rg", "name": "r", "location": "westeurope", "enableNonSslPort": False}
    unknown = ap.arm_resource("azure-native:cache:Redis", resource_id("Microsoft.Cache/redis", "r"), inputs)
    assert (unknown.type, unknown.name) == ("Microsoft.Cache/redis", "r")  # its type from its ID
    assert unknown.body["properties"] == {"enableNonSslPort": False}
    setting = diagnostic_setting(resource_id(T, "t1"))
    assert setting.scope == resource_id(T, "t1") and "resourceUri" not in setting.body["properties"]
    cluster = resource_id("Microsoft.ContainerService/managedClusters", "aks")
    extension = ap.arm_resource("azure-native:kubernetesconfiguration:Extension",
                                f"{cluster}/providers/Microsoft.KubernetesConfiguration/extensions/azureml", {
        "resourceGroupName": "rg", "clusterRp": "Microsoft.ContainerService", "clusterResourceName": "managedClusters",
        "clusterName": "aks", "extensionName": "azureml", "extensionType": "Microsoft.AzureML.Kubernetes"})
    assert (extension.scope, extension.name, extension.body["properties"]) == (
        cluster, "azureml", {"extensionType": "Microsoft.AzureML.Kubernetes"})


# --- fetching -------------------------------------------------------------------------------------------------------

def test_mcsb_entries_from_an_initiative():
    def reference(name, guid, **parameters):
        return {"policyDefinitionReferenceId": name, "parameters": parameters,
                "policyDefinitionId": f"/providers/Microsoft.Authorization/policyDefinitions/{guid}"}

    initiative = {"properties": {
        "displayName": "Microsoft cloud security benchmark", "metadata": {"version": "1.2.3"},
        "parameters": {"aEffect": {"type": "String", "defaultValue": "Audit"}},
        "policyDefinitions": [
            reference("refA", "A", effect={"value": "[parameters('aEffect')]"}),  # the initiative parameter's default
            reference("refB", "b"),  # no effect: the definition's own (GUIDs compare case-insensitively)
            reference("refC", "C", audit_effect={"value": "Disabled"}),  # a literal, to its effect parameter
            reference("refD", "D"),  # not a pinned definition
        ]}}
    definitions = {"A": ("X/a.json", "effect"), "B": ("X/b.json", "effect"), "C": ("X/c.json", "audit_effect")}
    assert ap.mcsb_entries(initiative, definitions) == {
        "initiative": "Microsoft cloud security benchmark", "version": "1.2.3", "definitions": {
            "A": {"file": "X/a.json", "referenceId": "refA", "effect": "Audit"},
            "B": {"file": "X/b.json", "referenceId": "refB", "effect": ap.DEFINITION_DEFAULT},
            "C": {"file": "X/c.json", "referenceId": "refC", "effect": "Disabled"}}}


def test_alias_dump_files_and_tables():
    assert ap.alias_files([f"{STORAGE}/privateEndpointConnections", "Microsoft.KeyVault/vaults"]) == [
        "aliases/Microsoft.KeyVault/vaults.md",
        "aliases/Microsoft.Storage/storageAccounts-privateEndpointConnections.md"]
    table = ("# Microsoft.KeyVault/vaults\n\n| Default Path | Alias |\n|---|---|\n"
             "| `properties.enableSoftDelete` | `Microsoft.KeyVault/vaults/enableSoftDelete` |\n")
    assert ap.parse_alias_markdown(table) == {
        "Microsoft.KeyVault/vaults/enableSoftDelete": "properties.enableSoftDelete"}
    assert ap.raw_url("Azure/azure-policy", "c0", "a b/c.json") == (
        "https://raw.githubusercontent.com/Azure/azure-policy/c0/a%20b/c.json")


def test_load_reads_a_folder(tmp_path):
    data = {"name": "g1", "id": "/providers/Microsoft.Authorization/policyDefinitions/g1", "properties": {
        "displayName": "one", "mode": "Indexed", "parameters": {"effect": {"defaultValue": "Deny"}},
        "policyRule": {"if": {"field": "type", "equals": T}, "then": {"effect": "[parameters('effect')]"}}}}
    (tmp_path / "Test").mkdir()
    (tmp_path / "Test" / "one.json").write_text(json.dumps(data))
    assigned = {"g1": {"file": "Test/one.json", "referenceId": "r1", "effect": "audit"}}
    (tmp_path / "mcsb.json").write_text(json.dumps({"definitions": assigned}))
    (tmp_path / "aliases.json").write_text(json.dumps({"aliases": {f"{T}/Flag": "properties.flag"}}))
    loaded = ap.load(tmp_path)
    [one] = loaded.definitions
    assert (one.id, one.file, one.effect, one.mcsb, one.target_types) == (
        "g1", "Test/one.json", "Deny", ap.McsbAssignment("r1", "audit"), frozenset({T.lower()}))
    assert loaded.aliases == {f"{T}/flag".lower(): "properties.flag"}


# --- the reference definitions and the stacks -----------------------------------------------------------------------

def load_reference() -> Catalog:
    """Microsoft's definitions from the reference folder, or the test skipped with how to fetch them."""
    if not REFERENCE.is_dir():
        pytest.skip(FETCH_HINT)
    return ap.load(REFERENCE)


@pytest.fixture(scope="module")
def reference():
    return load_reference()


def arm_resources(run) -> list[ArmResource]:
    """A stack's registered resources as the ARM bodies the definitions judge (providers and components have none)."""
    resources = (ap.arm_resource(r.type, r.id, revealed(r.inputs)) for r in run.resources)
    return [resource for resource in resources if resource is not None]


def test_pinned_files_are_the_reference_definitions():
    if not REFERENCE.is_dir():
        pytest.skip(FETCH_HINT)
    files = sorted(path.relative_to(REFERENCE).as_posix() for path in REFERENCE.glob("*/*.json"))
    assert sorted(path.removeprefix(ap.DEFINITIONS_PREFIX) for path in ap.PINNED_FILES) == files


def test_the_reference_loads(reference):
    assert len(reference.definitions) == len(ap.PINNED_FILES)
    assert {d.effect.lower() for d in reference.definitions} <= {
        "audit", "deny", "modify", "auditifnotexists", "deployifnotexists"}
    assert all(d.target_types for d in reference.definitions)
    needed = set().union(*(ap.rule_alias_names(d.rule) for d in reference.definitions))
    assert {alias.lower() for alias in needed} <= set(reference.aliases)  # what `fetch` builds aliases.json from


def test_fetch_rebuilds_the_reference_from_its_sources(reference, tmp_path, monkeypatch, capsys):
    """`fetch`, its downloads answered from the reference folder: an initiative and an alias dump made from
    mcsb.json and aliases.json give them back."""
    mcsb = json.loads((REFERENCE / "mcsb.json").read_text())
    dumped = json.loads((REFERENCE / "aliases.json").read_text())["aliases"]
    effects = {d.id: ap.effect_parameter(d.rule) for d in reference.definitions}
    assigned = mcsb["definitions"].items()
    initiative = {"properties": {
        "displayName": mcsb["initiative"], "metadata": {"version": mcsb["version"]},
        "parameters": {f"{guid}Effect": {"defaultValue": entry["effect"]} for guid, entry in assigned},
        "policyDefinitions": [{
            "policyDefinitionReferenceId": entry["referenceId"], "policyDefinitionId": f"/providers/x/{guid}",
            "parameters": {} if entry["effect"] == ap.DEFINITION_DEFAULT
            else {effects[guid]: {"value": f"[parameters('{guid}Effect')]"}}} for guid, entry in assigned]}}

    def download(url):
        path = ap.urllib.parse.unquote(url.split("/", 6)[6])
        if url.startswith(ap.raw_url(ap.ALIASES_REPO, ap.ALIASES_COMMIT, "")):
            kind = path.removeprefix("aliases/").removesuffix(".md").replace("-", "/")
            rows = [f"| `{p}` | `{a}` |" for a, p in dumped.items() if ap._applies(a, kind)]
            return ("| Default Path | Alias |\n|---|---|\n" + "\n".join(rows)).encode() if rows else None
        if path == ap.MCSB_FILE:
            return json.dumps(initiative).encode()
        return (REFERENCE / path.removeprefix(ap.DEFINITIONS_PREFIX)).read_bytes()

    monkeypatch.setattr(ap, "_download", download)
    ap.main(["fetch", "--into", str(tmp_path)])
    capsys.readouterr()
    rebuilt = ap.load(tmp_path)
    assert [(d.file, d.effect, d.mcsb) for d in rebuilt.definitions] == [
        (d.file, d.effect, d.mcsb) for d in reference.definitions]
    assert json.loads((tmp_path / "mcsb.json").read_text()) == mcsb
    assert rebuilt.aliases.items() <= reference.aliases.items()


@pytest.mark.parametrize("period, action, expected", [
    ("7.00:00:00", "Block", Outcome.COMPLIANT),
    ("30.00:00:00", "Block", Outcome.NON_COMPLIANT),
    ("7.01:00:00", "Block", Outcome.NON_COMPLIANT),
    ("7.00:00:00", "Log", Outcome.NON_COMPLIANT),
    (None, None, Outcome.NON_COMPLIANT),
])
def test_the_sas_deny_definition(reference, period, action, expected):
    [sas] = [d for d in reference.definitions if d.file == "Storage/EnforceStorageSasMaxExpiration7Days_Deny.json"]
    inputs = {"resourceGroupName": "rg", "accountName": "st", "kind": "StorageV2"}
    if period:
        inputs["sasPolicy"] = {"sasExpirationPeriod": period, "expirationAction": action}
    account = ap.arm_resource("azure-native:storage:StorageAccount", resource_id(STORAGE, "st"), inputs)
    [finding] = ap.evaluate(Catalog((sas,), reference.aliases), [account])
    assert (sas.effect, finding.outcome) == ("Deny", expected)


@pytest.mark.parametrize("stack", every_stack())
def test_the_stacks_against_the_built_in_definitions(reference, stack):
    run = run_stack(stack)
    declared = {r.type for r in run.resources if r.type.startswith("azure-native:")}
    assert declared <= set(ap.ARM_TABLE), sorted(declared - set(ap.ARM_TABLE))
    resources = arm_resources(run)
    assert [(r.token, r.type) for r in resources if r.type != ap.type_of_id(r.id)] == []
    findings = ap.evaluate(reference, resources)
    print(f"\n=== {stack}\n{ap.report(findings)}")
    assert [(f.definition.file, f.resource.id, f.reason) for f in findings if f.outcome is Outcome.UNRESOLVED] == []
    assert [(f.definition.file, f.resource.id) for f in ap.deny_findings(findings)] == []  # deployable under any Deny
    if stack == "prod":  # MCSB, once per resource and property: the three infra/conformance.py explains
        assert len(ap.mcsb_findings(findings)) <= 3
    if stack in ("dev", "prod"):  # what is left is exactly what infra/conformance.py keeps, and why
        found = {(f.definition.id, f.resource.type) for f in findings if f.outcome is Outcome.NON_COMPLIANT}
        kept = {(k.definition, conformance.TARGETS[k.target]) for k in conformance.kept(stack) if k.in_request}
        assert found == kept
        named = {d.id: (d.display_name, d.mcsb and d.mcsb.reference_id) for d in reference.definitions}
        assert [k for k in conformance.kept(stack) if named[k.definition] != (k.title, k.mcsb_reference)] == []
