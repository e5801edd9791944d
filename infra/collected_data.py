"""How long what the online endpoints collect is kept: the workspace storage's lifecycle management policy deletes each
workload's collected data once it is older than its workload.yml's `monitor.keep_days`.

Every online deployment's data collector writes to the workspace's default datastore, `workspaceblobstore`, whose
container is `azureml-blobstore-<workspace ID>`, under `modelDataCollector/<workload>/` (jobs/azure/entities.py
`collected_path`): one rule per workload deletes the blobs there that were last modified more than its days ago
("Lifecycle management policies that delete blobs", Expire data based on age). The workloads are read from their
folders, so that adding or changing a workload's retention shows in the pull request's `pulumi preview`.

A storage account has one policy, named `default` (Microsoft.Storage/storageAccounts/managementPolicies); the
rule `lifecycle-rules-azure-accepts` (infra/constraints.py) holds its rules to what Azure takes. With blob soft
delete on, a deleted blob stays soft-deleted for that retention period first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import storage

from infra.context import StackContext

# the data collector's folder in the workspace's default container (azure-ai-ml DEFAULT_MDC_PATH)
COLLECTOR_FOLDER = "modelDataCollector"
# what the data collector writes; the delete action takes both ("blobTypes": blockBlob, appendBlob)
BLOB_TYPES = ["blockBlob", "appendBlob"]


def retention_days() -> dict[str, int]:
    """Each workload's `monitor.keep_days`, by workload name (those that keep collected data until deleted by hand
    have none)."""
    from jobs.workloads import load_workloads

    return {workload.name: workload.monitor.keep_days for workload in load_workloads() if workload.monitor.keep_days}


def rule_name(workload: str) -> str:
    """A rule name is letters and digits only (infra/constraints.py lifecycle_rules_azure_accepts)."""
    return "collected" + re.sub(r"[^A-Za-z0-9]", "", workload)


@dataclass(frozen=True)
class CollectedDataArgs:
    stack: StackContext
    storage_account: pulumi.Input[str]
    workspace_id: pulumi.Input[str]  # the workspace's GUID (its `workspaceId`): its default container's name
    retention: dict[str, int] = field(default_factory=retention_days)


class CollectedData(pulumi.ComponentResource):
    """The lifecycle management policy that deletes each workload's collected data after its days; none when no
    workload sets any."""

    def __init__(self, name: str, args: CollectedDataArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:CollectedData", name, None, opts)
        self.policy = None
        if args.retention:
            container = pulumi.Output.concat("azureml-blobstore-", args.workspace_id)
            rules = [
                storage.ManagementPolicyRuleArgs(
                    name=rule_name(workload),
                    type=storage.RuleType.LIFECYCLE,
                    enabled=True,
                    definition=storage.ManagementPolicyDefinitionArgs(
                        filters=storage.ManagementPolicyFilterArgs(
                            blob_types=BLOB_TYPES,
                            prefix_match=[pulumi.Output.concat(container, f"/{COLLECTOR_FOLDER}/{workload}/")],
                        ),
                        actions=storage.ManagementPolicyActionArgs(
                            base_blob=storage.ManagementPolicyBaseBlobArgs(
                                delete=storage.DateAfterModificationArgs(days_after_modification_greater_than=days)
                            )
                        ),
                    ),
                )
                for workload, days in sorted(args.retention.items())
            ]
            self.policy = storage.ManagementPolicy(
                "collected-data-retention",
                account_name=args.storage_account,
                resource_group_name=args.stack.resource_group_name,
                management_policy_name="default",
                policy=storage.ManagementPolicySchemaArgs(rules=rules),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({})
