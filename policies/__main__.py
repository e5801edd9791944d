"""The policy pack's entry point. Only the Pulumi CLI runs this (PolicyPack serves until it is stopped);
the policies themselves live in policies/pack.py, which tests import."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: infra/ and policies/

from pulumi_policy import PolicyPack  # noqa: E402

from policies.pack import PACK_NAME, policies  # noqa: E402

PolicyPack(name=PACK_NAME, policies=policies())
