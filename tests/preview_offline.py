"""What `pulumi preview --policy-pack policies` runs in Python, run offline from the `infra` environment alone.

    .venv-infra/bin/python tests/preview_offline.py

Evaluates the Pulumi program of every stack (each stack file, each with a team, and the ML registry's) under
`pulumi.runtime.set_mocks`, and runs every policy of the CrossGuard pack over what it registered, as the policy server
would (tests/policy_harness.py). Prints one line per stack and every violation; exits 1 on a mandatory one. `.ci/run`
runs it in an environment built from the `infra` group only (pyproject.toml), so that the pull request's preview and
`pulumi up`, which install no more, are known to import nothing else. A script, not a test: it needs its own
environment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from pulumi_policy import EnforcementLevel  # noqa: E402

from policies import pack  # noqa: E402
from policy_harness import run_policy  # noqa: E402
from rule_cases import entries  # noqa: E402
from stack_harness import every_stack, run_stack  # noqa: E402


def main() -> int:
    policies = pack.policies()
    mandatory = 0
    for stack in every_stack():
        start = time.perf_counter()
        items = entries(run_stack(stack))
        found = [(policy, line) for policy in policies for line in run_policy(policy, items)]
        blocking = [(policy, line) for policy, line in found if policy.enforcement_level == EnforcementLevel.MANDATORY]
        mandatory += len(blocking)
        print(f"{stack}: {len(items)} resources, {len(policies)} policies, {len(blocking)} mandatory and "
              f"{len(found) - len(blocking)} advisory violations, {time.perf_counter() - start:.1f} s")  # fmt: skip
        for policy, line in found:
            print(f"  [{policy.enforcement_level.value}] {policy.name}: {line}")
    return 1 if mandatory else 0


if __name__ == "__main__":
    sys.exit(main())
