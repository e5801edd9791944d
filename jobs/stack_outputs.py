"""A stack's outputs, as the post-provision stage reads them: from `pulumi stack output` or a JSON file.

Every key in `infra.outputs.REQUIRED` must be there and be a non-empty string. A key in `OPTIONAL` is
exported only when the stack has what it names: the engine drops a None export, so absence (or a null
left in an older outputs file) reads as None. A key in `MAPS` (the workstations: user -> instance name) is a
JSON object of non-empty strings; absent or null (outputs of a stack from before it) it reads as empty. Secret
outputs are never kept: the stage signs in with a token credential (jobs/azure/credentials.py), never with a
client secret.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from infra import outputs as keys
from jobs.flow import FlowError

# what `pulumi stack output --json` prints for a secret when --show-secrets is missing
_HIDDEN_SECRET = "[secret]"


class OutputsError(FlowError):
    """The stack outputs are missing, unreadable or malformed; the message names every bad key."""


def _problem(key: str, value: object) -> str | None:
    """What is wrong with a present, non-null value, or None."""
    if not isinstance(value, str) or not value.strip():
        return f"{key}: expected a non-empty string, got {type(value).__name__}"
    if value == _HIDDEN_SECRET:
        return f"{key}: hidden as a secret (run pulumi stack output with --show-secrets)"
    if key in keys.CHOICES and value not in keys.CHOICES[key]:
        return f"{key}: {value!r} is none of {', '.join(keys.CHOICES[key])}"
    return None


def _names(key: str, value: object) -> tuple[Mapping[str, str], str | None]:
    """A MAPS value, read-only, and what is wrong with it (None when nothing)."""
    if value is None:
        return MappingProxyType({}), None
    if not isinstance(value, dict):
        return MappingProxyType({}), f"{key}: expected a JSON object of names, got {type(value).__name__}"
    bad = sorted(str(name) for name, item in value.items() if not isinstance(item, str) or not item.strip())
    if bad:
        return MappingProxyType({}), f"{key}: expected a non-empty name for {', '.join(bad)}"
    return MappingProxyType(dict(value)), None


def validate(raw: object, source: str) -> Mapping[str, str | None]:
    """Every required and optional output of `raw` (None for an absent optional one), read-only, or
    OutputsError naming every missing or malformed key."""
    if not isinstance(raw, dict):
        raise OutputsError(f"{source}: expected a JSON object of stack outputs, got {type(raw).__name__}")
    problems = []
    for key in keys.REQUIRED:
        if key not in raw:
            problems.append(f"{key}: missing")
        elif raw[key] is None:
            problems.append(f"{key}: is null")
        elif problem := _problem(key, raw[key]):
            problems.append(problem)
    for key in keys.OPTIONAL:
        if raw.get(key) is not None and (problem := _problem(key, raw[key])):
            problems.append(problem)
    maps = {}
    for key in keys.MAPS:
        maps[key], problem = _names(key, raw.get(key))
        if problem:
            problems.append(problem)
    if problems:
        raise OutputsError(f"{source}: bad stack outputs:\n  " + "\n  ".join(problems))
    return MappingProxyType({**{key: raw.get(key) for key in keys.REQUIRED + keys.OPTIONAL}, **maps})


def from_file(path: str | Path) -> Mapping[str, str | None]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise OutputsError(f"{path}: stack outputs file not found") from None
    except json.JSONDecodeError as error:
        raise OutputsError(f"{path}: not JSON ({error})") from None
    return validate(raw, str(path))


def from_stack(stack: str) -> Mapping[str, str | None]:
    command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
    source = f"pulumi stack {stack}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OutputsError(f"{source}: the pulumi CLI is not installed (or pass --outputs FILE)") from None
    if done.returncode != 0:
        # pulumi's stderr names the problem (no such stack, not logged in); it never holds output values
        raise OutputsError(f"{source}: `{' '.join(command)}` failed: {done.stderr.strip()}")
    try:
        raw = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise OutputsError(f"{source}: pulumi printed no JSON ({error})") from None
    return validate(raw, source)
