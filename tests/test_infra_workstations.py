"""The data scientists' workstations (compute instances) and the team's access, under mocks: the stack files (no one
listed), and each stack with a team (tests/stack_harness.py, TEAM_STACKS: granted directly in dev, through the group
in prod). Then every bad value of their settings, each one clear error naming its key."""

from __future__ import annotations

import pytest

from infra import outputs, roles, schedules, settings
from infra.naming import COMPUTE_INSTANCE, Names
from infra.workstations import IMMUTABLE
from stack_harness import (
    TEAM_GROUP,
    TEAM_USERS,
    ArmRefused,
    PlatformMocks,
    RecordingMonitor,
    evaluate,
    only_problem,
    run_stack,
    stack_config,
    team_users,
    with_setting,
    with_team,
)

NS = "azureml-platform"
ML = "azure-native:machinelearningservices"
ROLE = "azure-native:authorization:RoleAssignment"


def instances(run):
    return [r for r in run.of_type(f"{ML}:Compute") if r.inputs["properties"]["computeType"] == "ComputeInstance"]


def people_grants(run):
    """(principal, principalType, role name, scope) of every role assignment to a group or user."""
    return {
        (r.inputs["principalId"], r.inputs["principalType"], r.role_name, r.inputs["scope"])
        for r in run.of_type(ROLE)
        if r.inputs["principalType"] in ("Group", "User")
    }  # fmt: skip


def team_grants(run, principal, principal_type):
    workspace, storage = run.one(f"{ML}:Workspace").id, run.one("azure-native:storage:StorageAccount").id
    found = {(principal, principal_type, "AzureML Data Scientist", workspace), (principal, principal_type, "Storage Blob Data Reader", storage)}
    if run.outputs[outputs.ENVIRONMENT] == "prod":  # prod's data scientists read the ML registry (tests/test_ml_registry.py)
        found.add((principal, principal_type, "ML registry reader", run.one(ROLE, "automation-ml-registry").inputs["scope"]))
    return found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_stack_files_list_no_one_and_export_an_empty_map(stack):
    run = run_stack(stack)
    assert instances(run) == [] and people_grants(run) == set()
    assert run.outputs[outputs.WORKSTATIONS] == {}  # kept by the engine: only None is dropped
    assert outputs.WORKSTATIONS not in run.dropped_outputs


@pytest.mark.parametrize("stack", ["dev+team", "prod+team"])
def test_one_personal_workstation_per_user(stack):
    run = run_stack(stack)
    parsed = settings.parse(run.config, run.stack)
    names = Names.build(NS, run.stack, parsed.name_prefix)
    found = {r.inputs["properties"]["properties"]["personalComputeInstanceSettings"]["assignedUser"]["objectId"]: r for r in instances(run)}
    assert set(found) == {object_id for _, object_id in TEAM_USERS}
    for user, object_id in TEAM_USERS:
        instance = found[object_id]
        assert instance.state["name"] == instance.inputs["computeName"] == names.workstation(user)
        assert COMPUTE_INSTANCE.check(instance.state["name"]) is None and user.lower()[:3] in instance.state["name"]
        assert instance.inputs["workspaceName"] == run.one(f"{ML}:Workspace").state["name"]
        assert "identity" not in instance.inputs  # idle shutdown would need it to hold Contributor
        compute = instance.inputs["properties"]
        assert compute["disableLocalAuth"] is True
        properties = compute["properties"]
        assert properties["personalComputeInstanceSettings"] == {
            "assignedUser": {"objectId": object_id, "tenantId": run.outputs[outputs.TENANT_ID]}}  # fmt: skip
        assert (properties["applicationSharingPolicy"], properties["computeInstanceAuthorizationType"]) == ("Personal", "personal")
        assert properties["vmSize"] == parsed.workstations.vm_size
        assert properties["idleTimeBeforeShutdown"] == parsed.workstations.idle_shutdown == "PT30M"
        assert properties["schedules"] == {"computeStartStop": [{
            "action": "Stop", "triggerType": "Cron", "status": "Enabled",
            "cron": {"expression": "0 19 * * 1-5", "timeZone": "W. Europe Standard Time"}}]}  # fmt: skip
        assert properties["sshSettings"] == {"sshPublicAccess": "Disabled"}
        assert properties["enableSSO"] is True
        assert instance.inputs["tags"]["environment"] == parsed.environment
    assert run.outputs[outputs.WORKSTATIONS] == {user: found[object_id].state["name"] for user, object_id in TEAM_USERS}
    assert outputs.WORKSTATIONS not in run.secret_outputs


def test_prod_workstations_have_no_public_ip_and_dev_ones_do():
    prod = run_stack("prod+team")
    vnet = prod.one("azure-native:network:VirtualNetwork").id
    endpoints = {r.urn for r in prod.of_type("azure-native:network:PrivateEndpoint") if not r.name.startswith("pe-mlregistry")}
    for instance in instances(prod):
        properties = instance.inputs["properties"]["properties"]
        assert properties["subnet"] == {"id": f"{vnet}/subnets/snet-training"}
        assert properties["enableNodePublicIp"] is False
        assert endpoints <= set(instance.dependencies)  # the workspace's private endpoint exists first
    for instance in instances(run_stack("dev+team")):
        properties = instance.inputs["properties"]["properties"]
        assert "subnet" not in properties and properties["enableNodePublicIp"] is True


def test_dev_grants_each_user_directly():
    run = run_stack("dev+team")
    expected = set().union(*(team_grants(run, object_id, "User") for _, object_id in TEAM_USERS))
    assert people_grants(run) == expected


def test_prod_grants_the_group_once_and_no_user_directly():
    run = run_stack("prod+team")
    assert people_grants(run) == team_grants(run, TEAM_GROUP, "Group")


def test_a_listed_user_in_the_group_holds_each_role_once():
    """dev with the group as well: the users get their roles through it only (a second assignment would be a 409,
    which the mocks answer as ARM does)."""
    run = evaluate("dev", with_team(stack_config("dev"), group=TEAM_GROUP))
    assert people_grants(run) == team_grants(run, TEAM_GROUP, "Group")
    assert len(instances(run)) == len(TEAM_USERS)


def test_a_group_without_workstations_gets_the_team_roles():
    run = evaluate("prod", with_setting(stack_config("prod"), f"{NS}:dataScientistsGroup", TEAM_GROUP))
    assert people_grants(run) == team_grants(run, TEAM_GROUP, "Group") and instances(run) == []
    assert run.outputs[outputs.WORKSTATIONS] == {}


def test_prod_users_without_a_group_are_granted_directly():
    run = evaluate("prod", with_team(stack_config("prod")))
    assert {(grant[0], grant[1]) for grant in people_grants(run)} == {(object_id, "User") for _, object_id in TEAM_USERS}


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    else:
        yield ".".join(path), value


def _changed_paths(before, after) -> set[str]:
    old, new = dict(_leaves(before.inputs)), dict(_leaves(after.inputs))
    return {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)}


def _covered(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + ".") for prefix in IMMUTABLE)


def test_what_azure_cannot_change_replaces_the_instance():
    """Each setting whose property Azure only takes at creation changes a replace path, so a change replaces the
    instance (its name stays, so the old one goes first) instead of failing, or silently not applying, an update."""
    changes = {"workstations.vmSize": "Standard_DS4_v2", "workstations.idleShutdown": "PT1H",
               "workstations.schedule.stop": "0 20 * * 1-5", "workstations.schedule.timeZone": "UTC"}  # fmt: skip
    config = run_stack("prod+team").config
    for key, value in changes.items():
        config = with_setting(config, f"{NS}:{key}", value)
    before = instances(run_stack("prod+team"))[0]
    after = next(r for r in instances(evaluate("prod", config)) if r.name == before.name)
    changed = _changed_paths(before, after)
    assert changed == {f"properties.properties.{path}" for path in ("vmSize", "idleTimeBeforeShutdown", "schedules.computeStartStop")}
    assert all(_covered(path) for path in changed)
    assert after.delete_before_replace is True and set(after.replace_on_changes) == set(IMMUTABLE)


def test_every_replace_path_is_an_input_and_a_new_owner_replaces():
    """A misspelt path would replace nothing: each one names an input the program sets (prod sets them all)."""
    instance = next(r for r in instances(run_stack("prod+team")) if r.name == "workstation-ada")
    paths = {path for path, _ in _leaves(instance.inputs)}
    for prefix in IMMUTABLE:
        assert any(path == prefix or path.startswith(prefix + ".") for path in paths), prefix
    before = next(r for r in instances(run_stack("dev+team")) if r.name == "workstation-ada")
    moved = [("ada", "00000000-0000-4000-8000-00000000beef"), *TEAM_USERS[1:]]
    after = next(r for r in instances(evaluate("dev", with_team(stack_config("dev"), users=moved))) if r.name == "workstation-ada")
    changed = _changed_paths(before, after)
    assert changed == {"properties.properties.personalComputeInstanceSettings.assignedUser.objectId"} and all(map(_covered, changed))


def test_the_mocks_refuse_a_compute_instance_name_arm_refuses():
    mocks = PlatformMocks()
    instance = {"computeName": "ada-ci12345", "workspaceName": "mlw", "resourceGroupName": "rg", "location": "westeurope",
                "properties": {"computeType": "ComputeInstance", "properties": {}}}  # fmt: skip

    def create(name, **changes):
        import pulumi

        return mocks.new_resource(pulumi.runtime.MockResourceArgs(f"{ML}:Compute", name, {**instance, **changes}, None, None))

    create("first")
    with pytest.raises(ArmRefused, match="Conflict: second: compute instance name 'ADA-ci12345' is taken in westeurope"):
        create("second", computeName="ADA-ci12345")
    with pytest.raises(ArmRefused, match="ValidationError"):
        create("third", computeName="ada-12345")


def test_a_preview_of_a_stack_with_a_team_declares_the_same_resources():
    monitor = RecordingMonitor(PlatformMocks())
    preview = evaluate("prod", run_stack("prod+team").config, monitor, preview=True)
    assert sorted(r.name for r in preview.resources) == sorted(r.name for r in run_stack("prod+team").resources)


def test_the_time_zones_are_those_azure_ml_schedules_accept():
    from azure.ai.ml.constants import TimeZone  # the SDK's list; 1.7 s to import, so the program holds a copy

    assert sorted(schedules.WINDOWS_TIME_ZONES) == sorted(zone.value for zone in TimeZone)


# ---- bad input: each bad value is one error naming its key, found before any resource is declared ----


def team(*users, stack="dev", **changes):
    config = with_team(stack_config(stack), users=users or TEAM_USERS)
    for key, value in changes.items():
        config = with_setting(config, f"{NS}:{key}", value)
    return config


def test_the_team_settings_parse():
    parsed = settings.parse(team(), "dev")
    assert [user.name for user in parsed.workstations.users] == [name for name, _ in TEAM_USERS]
    assert parsed.data_scientists_group is None
    assert settings.parse(with_team(stack_config("prod"), group=TEAM_GROUP), "prod").data_scientists_group == TEAM_GROUP


@pytest.mark.parametrize(
    "users, changes, stack, expected",
    [
        ((("ada", "not-a-guid"),), {}, "dev",
         f"{NS}:workstations.users[0].objectId is 'not-a-guid'; expected an Entra object ID (a GUID)"),
        ((("ada", TEAM_USERS[0][1]), ("ada2", TEAM_USERS[0][1].upper())), {}, "dev",
         f"{NS}:workstations.users[1].objectId is {NS}:workstations.users[0].objectId too ('ada'); list each person once"),
        ((("Ada", TEAM_USERS[0][1]), ("ada", TEAM_USERS[1][1])), {}, "dev",
         f"{NS}:workstations.users[1].name 'ada' makes the compute instance name 'ada-cib0613', as {NS}:workstations.users[0].name 'Ada' does"),
        ((("alexander-hamilton1", TEAM_USERS[0][1]), ("alexander.hamilton2", TEAM_USERS[1][1])), {}, "prod",
         f"{NS}:workstations.users[1].name 'alexander.hamilton2' makes the compute instance name 'alexander-hamilt-ci4362a'"),
        ((("1ada", TEAM_USERS[0][1]),), {}, "dev", f"{NS}:workstations.users[0].name is '1ada'; expected a name starting with a letter"),
        ((), {"workstations.idleShutdown": "PT10M"}, "dev",
         f"{NS}:workstations.idleShutdown is 'PT10M': that is 10 minutes; allowed: 15 minutes (PT15M) to 3 days (P3D)"),
        ((), {"workstations.idleShutdown": "P3DT1H"}, "prod", f"{NS}:workstations.idleShutdown is 'P3DT1H': that is 4380 minutes"),
        ((), {"workstations.idleShutdown": "30m"}, "dev", f"{NS}:workstations.idleShutdown is '30m': expected an ISO 8601 duration"),
        ((), {"workstations.schedule.stop": "0 25 * * 1-5"}, "dev", f"{NS}:workstations.schedule.stop is '0 25 * * 1-5': hour '25' is outside 0-23"),
        ((), {"workstations.schedule.stop": "0 19 * *"}, "dev", f"{NS}:workstations.schedule.stop is '0 19 * *': it has 4 fields"),
        ((), {"workstations.schedule.stop": ["0 19 * * 1-5", "0 19 * * MON"]}, "dev",
         f"{NS}:workstations.schedule.stop[1] is '0 19 * * MON': day of week 'MON' is not '*' or a list of numbers"),
        ((), {"workstations.schedule.start": ["0 8 * * 1", "0 8 * * 2", "0 8 * * 3", "0 8 * * 4"]}, "dev",
         f"{NS}:workstations.schedule.start and {NS}:workstations.schedule.stop make 5 schedules; Azure allows at most 4"),
        ((), {"workstations.schedule.timeZone": "Europe/Berlin"}, "dev",
         f"{NS}:workstations.schedule.timeZone is 'Europe/Berlin': not a Windows time zone name"),
        ((), {"workstations.vmSize": "Standard_NC4as_T4_v3"}, "dev",
         f"{NS}:workstations.vmSize is 'Standard_NC4as_T4_v3', a GPU size, but {NS}:gpuCluster.enabled is false in this stack"),
        ((), {"dataScientistsGroup": "data-scientists"}, "dev",
         f"{NS}:dataScientistsGroup is 'data-scientists'; expected the object ID (a GUID) of an Entra group"),
        ((), {"dataScientistsGroup": TEAM_USERS[1][1]}, "dev",
         f"{NS}:dataScientistsGroup is the objectId of {NS}:workstations.users[1] ('grace.hopper'), a user"),
        ((), {"workstations.users": "ada"}, "dev", f"{NS}:workstations.users is 'ada'; expected a list"),
        ((), {"workstations.users": [{"name": "ada", "objectId": TEAM_USERS[0][1], "email": "ada@example.org"}]}, "dev",
         f"{NS}:workstations.users[0].email is not a known setting; known: name, objectId"),
        ((), {"workstations.users": [{"name": "ada"}]}, "dev", f"{NS}:workstations.users[0].objectId is required"),
        ((), {"workstations.idleShutdonw": "PT30M"}, "dev", f"{NS}:workstations.idleShutdonw is not a known setting"),
    ],
    ids=["object ID not a GUID", "same user twice", "names differing in case", "names differing after 16 characters",
         "name not starting with a letter", "idle shutdown under 15 minutes", "idle shutdown over 3 days",
         "idle shutdown not ISO 8601", "cron out of range", "cron with four fields", "cron with a day name",
         "five schedules", "IANA time zone", "GPU size with the GPU switch off", "group not a GUID",
         "group is a user", "users not a list", "unknown user key", "user without object ID", "misspelt key"],
)  # fmt: skip
def test_bad_workstation_settings(users, changes, stack, expected):
    assert only_problem(team(*users, stack=stack, **changes), stack).startswith(expected)


def test_a_gpu_workstation_is_fine_where_the_gpu_switch_is_on():
    parsed = settings.parse(team(stack="prod", **{"workstations.vmSize": "Standard_NC4as_T4_v3"}), "prod")
    assert parsed.workstations.vm_size == "Standard_NC4as_T4_v3"


def test_the_training_subnet_holds_the_workstations_too():
    """One address per workstation, beside the clusters' nodes: 8 CPU + 2 GPU + 20 users + 5 Azure keeps = 35 > 32."""
    config = with_team(with_setting(stack_config("prod"), f"{NS}:network.trainingSubnet", "10.60.0.0/27"), users=team_users(20))
    assert "it needs at least 35" in only_problem(config, "prod")
    assert settings.parse(with_team(stack_config("prod"), users=team_users(20)), "prod")


def test_bad_workstation_settings_declare_nothing():
    monitor = RecordingMonitor(PlatformMocks())
    with pytest.raises(settings.SettingsError, match=r"workstations\.idleShutdown is 'PT5M'"):
        evaluate("dev", team(**{"workstations.idleShutdown": "PT5M"}), monitor=monitor)
    assert monitor.requests == {}


def _wire(args) -> dict:
    """What a typed class sends for these args: the engine's camelCase properties (rpc.serialize_property)."""
    from pulumi.runtime import rpc
    from pulumi.runtime.sync_await import _sync_await

    return _sync_await(rpc.serialize_property(args, [], None))


def test_the_wire_properties_are_what_the_typed_classes_send():
    """Workstations and role assignments are declared by their wire properties (infra/arm.py, for speed): the same
    request as `machinelearningservices.Compute` and `authorization.RoleAssignment` would make."""
    from pulumi_azure_native import authorization
    from pulumi_azure_native import machinelearningservices as ml

    run = run_stack("prod+team")
    ada = run.one(f"{ML}:Compute", "workstation-ada").inputs
    typed = ml.ComputeArgs(
        compute_name=ada["computeName"], resource_group_name="rg-mlp-prod", workspace_name=run.one(f"{ML}:Workspace").state["name"],
        location="westeurope", tags=ada["tags"],
        properties=ml.ComputeInstanceArgs(
            compute_type="ComputeInstance", description="ada's workstation", disable_local_auth=True,
            properties=ml.ComputeInstancePropertiesArgs(
                vm_size="Standard_DS3_v2",
                personal_compute_instance_settings=ml.PersonalComputeInstanceSettingsArgs(
                    assigned_user=ml.AssignedUserArgs(object_id=TEAM_USERS[0][1], tenant_id=run.outputs[outputs.TENANT_ID])),
                application_sharing_policy=ml.ApplicationSharingPolicy.PERSONAL,
                compute_instance_authorization_type=ml.ComputeInstanceAuthorizationType.PERSONAL,
                ssh_settings=ml.ComputeInstanceSshSettingsArgs(ssh_public_access=ml.SshPublicAccess.DISABLED),
                idle_time_before_shutdown="PT30M",
                schedules=ml.ComputeSchedulesArgs(compute_start_stop=[ml.ComputeStartStopScheduleArgs(
                    action=ml.ComputePowerAction.STOP, trigger_type=ml.ComputeTriggerType.CRON, status=ml.ScheduleStatus.ENABLED,
                    cron=ml.CronArgs(expression="0 19 * * 1-5", time_zone="W. Europe Standard Time"))]),
                enable_sso=True,
                subnet=ml.ResourceIdArgs(id=f"{run.one('azure-native:network:VirtualNetwork').id}/subnets/snet-training"),
                enable_node_public_ip=False,
            ),
        ),
    )  # fmt: skip
    assert _wire(typed) == ada
    for assignment in run.of_type(ROLE):
        sent = assignment.inputs
        typed_grant = authorization.RoleAssignmentArgs(
            principal_id=sent["principalId"], principal_type=sent["principalType"], role_definition_id=sent["roleDefinitionId"],
            scope=sent["scope"], description=sent["description"],
        )  # fmt: skip
        assert _wire(typed_grant) == sent, assignment.name
