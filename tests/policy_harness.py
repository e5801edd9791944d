"""The CrossGuard pack's policies run as the policy server runs them, without the Pulumi CLI.

Pulumi ships no test harness for policy packs (pulumi/pulumi-policy#445), so this builds the policies' arguments as
the policy server does (pulumi_policy/policy.py, Analyze and AnalyzeStack): the wire properties the engine
registered, deserialized and wrapped in the unknown-checking proxy, with parents and property dependencies resolved
to PolicyResource objects. tests/test_policies.py and tests/preview_offline.py use it.
"""

from __future__ import annotations

import copy

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy


def _options(entry) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=entry.protect, ignore_changes=list(entry.resource.ignore_changes),
        delete_before_replace=entry.resource.delete_before_replace, aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=list(entry.resource.additional_secret_outputs),
        parent=entry.parent or None,
    )  # fmt: skip


def _props(entry):
    return unknown_checking_proxy(deserialize_properties(copy.deepcopy(entry.props)))


def resource_args(entry) -> ResourceValidationArgs:
    return ResourceValidationArgs(entry.resource.type, _props(entry), entry.urn, entry.resource.name, _options(entry), None, {}, {})


def stack_args(items) -> StackValidationArgs:
    built = {entry.urn: PolicyResource(entry.resource.type, _props(entry), entry.urn, entry.resource.name, _options(entry),
                                       None, None, [], {}) for entry in items}  # fmt: skip
    for entry in items:
        resource = built[entry.urn]
        resource.parent = built.get(entry.parent)
        resource.property_dependencies = {
            prop: [built[urn] for urn in urns if urn in built] for prop, urns in entry.property_dependencies.items()
        }
    return StackValidationArgs(list(built.values()), {}, {})


def run_policy(policy, items) -> list[str]:
    found = []
    report = lambda message, urn=None: found.append(message)  # noqa: E731
    if isinstance(policy, ResourceValidationPolicy):
        for entry in items:
            policy.validate(resource_args(entry), report)
    else:
        policy.validate(stack_args(items), report)
    return found
