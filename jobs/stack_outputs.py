"""A stack's outputs, as the post-provision stage reads them: from `pulumi stack output` or a JSON file.

Every key in `infra.outputs.REQUIRED` must be there and be a non-empty string (null is allowed for
`NULLABLE` keys). Secret outputs are never kept: the stage authenticates with DefaultAzureCredential.
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


def validate(raw: object, source: str) -> Mapping[str, str | None]:
    """The required outputs of `raw`, read-only, or OutputsError naming every missing or malformed key."""
    if not isinstance(raw, dict):
        raise OutputsError(f"{source}: expected a JSON object of stack outputs, got {type(raw).__name__}")
    problems = []
    for key in keys.REQUIRED:
        if key not in raw:
            problems.append(f"{key}: missing")
            continue
        value = raw[key]
        if value is None:
            if key not in keys.NULLABLE:
                problems.append(f"{key}: is null")
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: expected a non-empty string, got {type(value).__name__}")
        elif value == _HIDDEN_SECRET:
            problems.append(f"{key}: hidden as a secret (run pulumi stack output with --show-secrets)")
    if problems:
        raise OutputsError(f"{source}: bad stack outputs:\n  " + "\n  ".join(problems))
    return MappingProxyType({key: raw[key] for key in keys.REQUIRED})


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
