"""The CrossGuard policies, built from the rule registry in infra/rules.py: one policy per rule.

Security and platform rules are mandatory (a violation fails `pulumi preview` and `pulumi up`); style and conformance rules
are advisory. A rule of one resource becomes a ResourceValidationPolicy, a rule of the whole stack a
StackValidationPolicy. Values a preview cannot know yet reach the rules as `rules.UNKNOWN`, so a rule never
trips over, or misreads, an ID that does not exist yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from infra import rules

PACK_NAME = "azureml-platform"
ENFORCEMENT = {
    "security": EnforcementLevel.MANDATORY,
    "platform": EnforcementLevel.MANDATORY,
    "style": EnforcementLevel.ADVISORY,
    "conformance": EnforcementLevel.ADVISORY,
}


def plain(value: Any) -> Any:
    """A copy of the policy server's proxied props with every unknown value replaced by rules.UNKNOWN."""
    try:
        if isinstance(value, Mapping):
            return {key: _item(value, key) for key in value}
        if isinstance(value, Sequence) and not isinstance(value, str):
            return [_item(value, index) for index in range(len(value))]
    except UnknownValueError:  # the container itself is unknown
        return rules.UNKNOWN
    return value


def _item(container: Any, key: Any) -> Any:
    try:
        return plain(container[key])
    except UnknownValueError:
        return rules.UNKNOWN


def from_resource_args(args: ResourceValidationArgs) -> rules.Resource:
    return rules.Resource(
        type=args.resource_type,
        name=args.name,
        urn=args.urn,
        inputs=plain(args.props),
        protect=bool(args.opts.protect),
        parent=args.opts.parent or "",
    )


def from_stack_args(args: StackValidationArgs) -> rules.Stack:
    return rules.Stack(
        tuple(
            rules.Resource(
                type=resource.resource_type,
                name=resource.name,
                urn=resource.urn,
                inputs=plain(resource.props),
                protect=bool(resource.opts.protect),
                parent=resource.parent.urn if resource.parent is not None else "",
                property_dependencies={
                    prop: tuple(dependency.urn for dependency in dependencies)
                    for prop, dependencies in resource.property_dependencies.items()
                },
            )
            for resource in args.resources
        )
    )


def _description(registered: rules.Rule) -> str:
    return f"{registered.description} {registered.source}".strip()


def policy(registered: rules.Rule):
    """The CrossGuard policy that enforces one rule."""
    level = ENFORCEMENT[registered.kind]
    if registered.resource_check is not None:

        def validate_resource(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
            for message in registered.resource_check(from_resource_args(args)):
                report_violation(message, None)

        return ResourceValidationPolicy(
            name=registered.name, description=_description(registered), validate=validate_resource, enforcement_level=level
        )

    def validate_stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for message in registered.stack_check(from_stack_args(args)):
            report_violation(message, None)

    return StackValidationPolicy(
        name=registered.name, description=_description(registered), validate=validate_stack, enforcement_level=level
    )


def policies() -> list:
    return [policy(registered) for registered in rules.rules()]
