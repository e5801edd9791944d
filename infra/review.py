"""Review a `pulumi preview --json` digest before it reaches a stack.

    python -m infra.review preview.json [--stack prod] [--allow-stateful-changes]

Prints a Markdown summary of creates, updates, replaces and deletes per resource type, and flags every
replace or delete of a stateful resource with the reasons Pulumi gives. Exit status: 0 when the change
may go ahead, 1 when a protected stack (prod, or `azureml-platform:protect: true`) has a flag and no
override, 2 when the input is not a preview digest this tool understands (never a silent pass).
The digest is the JSON the CLI writes (`display.PreviewDigest` in the Pulumi engine).
"""

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from infra.stacks import PROTECT_KEY, StackConfigError, is_protected

# resource types whose replacement or deletion loses data, history or identity
STATEFUL_TYPES = {
    "azure-native:machinelearningservices:Workspace": "Azure ML workspace",
    "azure-native:machinelearningservices:Registry": "Azure ML registry",
    "azure-native:storage:StorageAccount": "storage account",
    "azure-native:keyvault:Vault": "Key Vault",
    "azure-native:containerregistry:Registry": "container registry",
    "azure-native:containerservice:ManagedCluster": "AKS cluster",
    "azure-native:operationalinsights:Workspace": "Log Analytics workspace",
}
# every step op the engine writes (deploy.StepOp); anything else means a format this tool does not know
KNOWN_OPS = frozenset({
    "same", "create", "update", "delete", "replace", "create-replacement", "delete-replaced",
    "read", "read-replacement", "refresh", "discard", "discard-replaced", "remove-pending-replace",
    "import", "import-replacement",
})
# the summary columns; a replacement's create-replacement and delete-replaced steps belong to its replace
SUMMARY_COLUMNS = {"create": "create", "import": "create", "update": "update", "replace": "replace", "delete": "delete"}
OVERRIDE_LABEL = "allow-stateful-changes"

EXIT_OK, EXIT_BLOCKED, EXIT_INVALID = 0, 1, 2


class PreviewError(ValueError):
    """The input is not a well-formed, successful preview digest."""


@dataclass(frozen=True)
class Flag:
    """A replace or delete of a stateful resource."""

    op: str
    type: str
    name: str
    urn: str
    reasons: tuple[str, ...]
    # the Azure resource id the stack holds now, when it has one
    azure_id: str | None = None

    @property
    def kind(self) -> str:
        return STATEFUL_TYPES[self.type]


@dataclass(frozen=True)
class Review:
    stack: str
    counts: dict[str, Counter]
    flags: tuple[Flag, ...]


def parse_urn(urn: object) -> tuple[str, str, str]:
    """(stack, type, name) of `urn:pulumi:<stack>::<project>::<parent types $ type>::<name>`."""
    parts = urn.split("::") if isinstance(urn, str) else []
    if len(parts) < 4 or not parts[0].startswith("urn:pulumi:") or not parts[0][len("urn:pulumi:"):]:
        raise PreviewError(f"step urn {urn!r} is not a Pulumi URN")
    return parts[0][len("urn:pulumi:"):], parts[2].split("$")[-1], "::".join(parts[3:])


def load_digest(path: Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise PreviewError(f"{path}: cannot read: {error.strerror}") from error
    try:
        digest = json.loads(text)
    except json.JSONDecodeError as error:
        raise PreviewError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(digest, dict):
        raise PreviewError(f"{path}: expected the JSON object `pulumi preview --json` writes")
    return digest


def _validated_steps(digest: dict) -> list[dict]:
    diagnostics = digest.get("diagnostics") or []
    if not isinstance(diagnostics, list) or not all(isinstance(d, dict) for d in diagnostics):
        raise PreviewError("'diagnostics' must be a list of objects")
    errors = [str(d.get("message", "")).strip() for d in diagnostics if d.get("severity") == "error"]
    if errors:
        raise PreviewError("the preview failed: " + " | ".join(errors))
    steps = digest.get("steps")
    if not isinstance(steps, list) or not steps:
        raise PreviewError("no 'steps': a preview always has at least the stack itself")
    summary = digest.get("changeSummary")
    if not isinstance(summary, dict) or not all(isinstance(n, int) for n in summary.values()):
        raise PreviewError("'changeSummary' must map operations to counts")
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise PreviewError(f"steps[{index}] is not an object")
        if step.get("op") not in KNOWN_OPS:
            raise PreviewError(f"steps[{index}] has unknown op {step.get('op')!r}")
        for key in ("replaceReasons", "diffReasons"):
            if not isinstance(step.get(key) or [], list):
                raise PreviewError(f"steps[{index}].{key} must be a list")
        detailed = step.get("detailedDiff") or {}
        if not isinstance(detailed, dict) or not all(
                isinstance(diff, dict) and isinstance(diff.get("kind"), str) for diff in detailed.values()):
            raise PreviewError(f"steps[{index}].detailedDiff must map property paths to {{\"kind\": ...}}")
    return steps


def _reasons(step: dict) -> tuple[str, ...]:
    if step["op"] == "delete":
        return ("no longer declared by the program (removed, renamed or moved to another parent)",)
    keys = step.get("replaceReasons") or []
    reasons = ["replaceReasons: " + (", ".join(f"`{key}`" for key in keys) if keys else "none given by the provider")]
    forcing = {path: diff.get("kind") for path, diff in (step.get("detailedDiff") or {}).items()
               if diff["kind"].endswith("-replace")}
    if forcing:
        reasons.append("detailedDiff: " + ", ".join(f"`{path}` ({kind})" for path, kind in sorted(forcing.items())))
    return tuple(reasons)


def review(digest: dict, stack: str | None = None) -> Review:
    counts: dict[str, Counter] = defaultdict(Counter)
    flags = []
    stacks = set()
    for step in _validated_steps(digest):
        step_stack, type_, name = parse_urn(step.get("urn"))
        stacks.add(step_stack)
        column = SUMMARY_COLUMNS.get(step["op"])
        if column:
            counts[type_][column] += 1
        if step["op"] in ("replace", "delete") and type_ in STATEFUL_TYPES:
            azure_id = (step.get("oldState") or {}).get("id")
            flags.append(Flag(step["op"], type_, name, step["urn"], _reasons(step), azure_id))
    if len(stacks) != 1:
        raise PreviewError(f"steps belong to several stacks: {', '.join(sorted(stacks))}")
    (found,) = stacks
    if stack and stack != found:
        raise PreviewError(f"this preview is of stack '{found}', not '{stack}'")
    return Review(found, dict(counts), tuple(flags))


def blocked(result: Review, protected: bool, overridden: bool) -> bool:
    return bool(result.flags) and protected and not overridden


def render_markdown(result: Review, protected: bool, overridden: bool) -> str:
    lines = [f"### Preview review: stack `{result.stack}`", ""]
    lines.append(f"Protected stack: **{'yes' if protected else 'no'}** (`{PROTECT_KEY}`, or the stack is prod).")
    lines.append("")
    changed = {t: c for t, c in result.counts.items() if sum(c.values())}
    if changed:
        lines += ["| Resource type | Create | Update | Replace | Delete |", "|---|---:|---:|---:|---:|"]
        for type_, c in sorted(changed.items()):
            lines.append(f"| `{type_}` | {c['create']} | {c['update']} | {c['replace']} | {c['delete']} |")
    else:
        lines.append("No resource changes.")
    lines.append("")
    if not result.flags:
        lines.append("No replace or delete of a stateful resource.")
        return "\n".join(lines) + "\n"
    lines += [f"#### Stateful resources {'' if protected else 'that would be '}replaced or deleted", ""]
    for flag in result.flags:
        lines.append(f"- **{flag.op}** {flag.kind} `{flag.name}` (`{flag.urn}`)")
        if flag.azure_id:
            lines.append(f"  - Azure resource: `{flag.azure_id}`")
        lines += [f"  - {reason}" for reason in flag.reasons]
    lines.append("")
    if blocked(result, protected, overridden):
        lines.append(f"**Blocked.** If this is intended, add the `{OVERRIDE_LABEL}` label to the pull request.")
    elif protected:
        lines.append(f"**Overridden** by the `{OVERRIDE_LABEL}` label: these changes will go ahead on merge.")
    else:
        lines.append("Not blocking: this stack is not protected.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.review", description=__doc__.split("\n\n")[0])
    parser.add_argument("preview", type=Path, help="the output of `pulumi preview --json`")
    parser.add_argument("--stack", help="fail unless the preview is of this stack")
    parser.add_argument("--config-dir", type=Path, default=Path("."), help="where Pulumi.<stack>.yaml lives")
    parser.add_argument("--allow-stateful-changes", action="store_true",
                        help=f"the explicit override (the PR's `{OVERRIDE_LABEL}` label)")
    args = parser.parse_args(argv)
    try:
        result = review(load_digest(args.preview), args.stack)
        protected = is_protected(result.stack, args.config_dir)
    except (PreviewError, StackConfigError) as error:
        print(f"preview review: {error}", file=sys.stderr)
        return EXIT_INVALID
    print(render_markdown(result, protected, args.allow_stateful_changes), end="")
    return EXIT_BLOCKED if blocked(result, protected, args.allow_stateful_changes) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
