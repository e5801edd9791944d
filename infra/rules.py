"""The rules a stack's resources must keep, in one registry that the tests and the CrossGuard pack share.

Four kinds: `security` (the platform's own secure defaults), `platform` (documented Azure constraints the
program could break: each quotes the page and sentence it enforces), `style` (the project's conventions) and
`conformance` (the Azure Policy findings the platform keeps, reported until an exemption declares them).
A rule looks at one resource, or at the whole stack when it needs several. Resources are seen as the engine
sees them: type token, camelCase inputs, options, and the URNs each input depends on.

During a `pulumi preview`, values that depend on resources not created yet are unknown. The pack hands them
to the rules as `UNKNOWN`; a rule that needs such a value says nothing about it rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

KINDS = ("security", "platform", "style", "conformance")


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def known(*values: Any) -> bool:
    return all(value is not UNKNOWN for value in values)


@dataclass(frozen=True)
class Resource:
    """One registered resource, as the rules see it."""

    type: str
    name: str  # the Pulumi logical name
    urn: str
    inputs: Mapping[str, Any]
    protect: bool = False
    parent: str = ""  # the parent's URN
    # input -> URNs of the resources that input's value comes from
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.type.split(':')[-1]} {self.name!r}"

    @property
    def environment(self) -> str | None:
        """dev, prod...: the resource's `environment` tag (untagged types have none)."""
        tags = self.inputs.get("tags")
        return tags.get("environment") if isinstance(tags, Mapping) and known(tags.get("environment")) else None

    def get(self, path: str, default: Any = None) -> Any:
        """An input by dotted path, e.g. "properties.properties.subnet.id"; `default` where it is absent."""
        value: Any = self.inputs
        for key in path.split("."):
            if value is UNKNOWN:
                return UNKNOWN
            if not isinstance(value, Mapping) or key not in value:
                return default
            value = value[key]
        return value

    def depends_on(self, prop: str) -> tuple[str, ...]:
        return tuple(self.property_dependencies.get(prop, ()))


@dataclass(frozen=True)
class Stack:
    """Every resource of one stack, and what rules ask of them together."""

    resources: tuple[Resource, ...]

    def of_type(self, token: str) -> list[Resource]:
        return [resource for resource in self.resources if resource.type == token]

    def by_urn(self, urn: str) -> Resource | None:
        return next((resource for resource in self.resources if resource.urn == urn), None)

    def sources(self, resource: Resource, prop: str, token: str) -> list[Resource]:
        """The resources of type `token` that `resource`'s input `prop` is built from."""
        found = (self.by_urn(urn) for urn in resource.depends_on(prop))
        return [source for source in found if source is not None and source.type == token]

    @property
    def environment(self) -> str | None:
        """dev, prod...: the `environment` tag every tagged resource carries."""
        return next((resource.environment for resource in self.resources if resource.environment), None)


ResourceCheck = Callable[[Resource], Iterator[str]]
StackCheck = Callable[[Stack], Iterator[str]]


@dataclass(frozen=True)
class Rule:
    name: str  # kebab-case, the policy's name in the pack
    kind: str  # one of KINDS
    description: str
    # exactly one of the two: a check of one resource, or of the stack as a whole (several resources)
    resource_check: ResourceCheck | None = None
    stack_check: StackCheck | None = None
    source: str = ""  # platform rules: the Azure page, and the sentence enforced

    def __post_init__(self):
        if self.kind not in KINDS or (self.resource_check is None) == (self.stack_check is None):
            raise ValueError(f"rule {self.name}: a kind of {KINDS} and exactly one check")

    def check(self, stack: Stack) -> list[str]:
        if self.stack_check is not None:
            return list(self.stack_check(stack))
        return [line for resource in stack.resources for line in self.resource_check(resource)]


REGISTRY: list[Rule] = []


def rule(kind: str, source: str = "", *, whole_stack: bool = False):
    """Register a check as a rule named after its function; its docstring's first line is the description."""

    def register(check: Callable) -> Callable:
        description = (check.__doc__ or "").strip().splitlines()[0] if check.__doc__ else check.__name__
        common = dict(name=check.__name__.replace("_", "-"), kind=kind, description=description, source=source)
        REGISTRY.append(Rule(**common, stack_check=check) if whole_stack else Rule(**common, resource_check=check))
        return check

    return register


def rules(kinds: Iterable[str] = KINDS) -> list[Rule]:
    """Every registered rule of these kinds (importing the modules that define them)."""
    from infra import conformance, constraints, security  # noqa: F401  (they register their rules on import)

    kinds = tuple(kinds)
    return [registered for registered in REGISTRY if registered.kind in kinds]


def violations(resources: Iterable[Resource], kinds: Iterable[str] = KINDS) -> list[str]:
    """Every violation of every rule of these kinds, `<rule>: <message>`."""
    stack = Stack(tuple(resources))
    return [f"{registered.name}: {line}" for registered in rules(kinds) for line in registered.check(stack)]
