"""What every platform component is built from: the stack's settings and names, and where it deploys."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.naming import Names
from infra.settings import Settings


@dataclass(frozen=True)
class StackContext:
    settings: Settings
    names: Names
    resource_group_name: pulumi.Input[str]
    tenant_id: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
