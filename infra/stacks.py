"""What the delivery tools (infra.review, infra.purge) need to know about a stack, read without Pulumi.

The Pulumi program reads the same `Pulumi.<stack>.yaml` through `pulumi.Config`; these tools run in CI
steps that have no Pulumi engine, so they read the file directly.
"""

import argparse
import sys
from pathlib import Path

import yaml

from infra.settings import ML_REGISTRY_PROJECT, PROJECT

PROTECT_KEY = f"{PROJECT}:protect"
# prod is protected whatever its config file says: a missing or mistyped key must not unprotect it
ALWAYS_PROTECTED = frozenset({"prod"})


class StackConfigError(ValueError):
    """A stack's config file is missing or unreadable."""


def stack_config(stack: str, root: Path) -> dict:
    """The `config:` mapping of `Pulumi.<stack>.yaml` under root."""
    path = Path(root) / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise StackConfigError(f"{path}: no config file for stack '{stack}'")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise StackConfigError(f"{path}: not valid YAML: {error}") from error
    config = document.get("config", {}) if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise StackConfigError(f"{path}: 'config' must be a mapping")
    return config


def is_protected(stack: str, root: Path) -> bool:
    """True for prod, for any stack whose config sets `azureml-platform:protect: true`, and for every stack of the ML
    registry's project (ml-registry/): it holds every promoted model."""
    project = Path(root) / "Pulumi.yaml"
    if project.is_file() and (yaml.safe_load(project.read_text()) or {}).get("name") == ML_REGISTRY_PROJECT:
        stack_config(stack, root)  # a stack that does not exist is an error all the same
        return True
    protect = stack_config(stack, root).get(PROTECT_KEY, False)
    if not isinstance(protect, bool):
        raise StackConfigError(f"Pulumi.{stack}.yaml: '{PROTECT_KEY}' must be true or false, not {protect!r}")
    return protect or stack in ALWAYS_PROTECTED


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.stacks --require-unprotected dev`: the teardown's guard, run before `pulumi destroy`."""
    parser = argparse.ArgumentParser(prog="python -m infra.stacks")
    parser.add_argument("--require-unprotected", metavar="STACK", required=True,
                        help="exit non-zero unless STACK may be torn down")
    parser.add_argument("--config-dir", type=Path, default=Path("."), help="where Pulumi.<stack>.yaml lives")
    args = parser.parse_args(argv)
    stack = args.require_unprotected
    try:
        protected = is_protected(stack, args.config_dir)
    except StackConfigError as error:
        print(f"stack check: {error}", file=sys.stderr)
        return 2
    if protected:
        print(f"stack check: '{stack}' is protected (prod, '{PROTECT_KEY}: true', or the ML registry): refusing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
