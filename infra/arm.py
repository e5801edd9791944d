"""Declaring an azure-native resource by its type token and wire (camelCase) properties, for resources a stack
declares many of or that the program reads little from.

Why not the typed classes (`pulumi_azure_native.network.VirtualNetwork`, `machinelearningservices.Compute`...):
importing `pulumi_azure_native.network` loads all 290 of its modules (0.7 s); and each typed resource resolves
dozens of outputs the program never reads and computes an alias URN for every API version its type ever had
(51 for Compute, 9 for RoleAssignment: pulumi/resource.py, `Resource.__init__`, collapse_alias_to_urn), which
would put the program over its time budget (benchmarks/program.py). The engine receives the same request, with
the provider version the typed classes pin. The tests hold the wire properties to what the typed classes send.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_azure_native import _utilities as azure_native


def declare(token: str, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """The resource; each key of `props` is an output attribute of it too (a key with None: an output only, e.g.
    "name", which ARM fills in)."""
    return pulumi.CustomResource(token, name, props, pulumi.ResourceOptions.merge(azure_native.get_resource_opts_defaults(), opts))
