"""Every Azure name the platform uses, built in one place and checked against Azure's rules.

Globally or regionally unique names (storage, Key Vault, registry, endpoints...) carry a short
suffix derived from the project, stack, name prefix and name generation, so a stack always gets
the same names and two stacks never share one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields

SUFFIX_LENGTH = 5


@dataclass(frozen=True)
class Rule:
    what: str  # the Azure resource kind, as users know it
    pattern: str
    allowed: str  # Azure's rule in words, for the error message

    def check(self, name: str) -> str | None:
        if re.fullmatch(self.pattern, name):
            return None
        return f"makes an invalid {self.what} name {name!r}: {self.allowed}"


_COMPUTE = Rule("compute", r"[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]", "2-16 letters, digits and hyphens")
# online endpoints: the stage names them per workload (jobs/azure/entities.py), with this rule
ENDPOINT_RULE = Rule(
    "online endpoint",
    r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]",
    "3-32 letters, digits and hyphens, starting with a letter",
)
# "Name is required and must be between 3 to 24 characters long. Valid characters are upper and lower case letters,
# digits, and the - character. Name must start with a letter. Name needs to be unique across all existing computes
# within an Azure region. ... If - character is used, then it needs to be followed by at least one letter later in
# the name" ("Create an Azure Machine Learning compute instance", Create, Studio: Compute name)
COMPUTE_INSTANCE = Rule(
    "compute instance",
    r"(?=.{3,24}$)[A-Za-z](?!.*-[^A-Za-z]*$)[A-Za-z0-9-]*",
    "3-24 letters, digits and hyphens, starting with a letter, every hyphen followed later by a letter",
)
# a workstation's name is "<user>-ci<suffix>": the user's name, cut to what fits, then the stack's suffix, which
# keeps it unique in the region and ends it in letters and digits after the last hyphen
WORKSTATION_USER_LENGTH = 24 - len("-ci") - SUFFIX_LENGTH
# virtual networks, NAT gateways, public IPs, private endpoints
_NETWORK = Rule(
    "network resource",
    r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?",
    "1-64 letters, digits, '_', '.' and '-', starting with a letter or digit, not ending in '.' or '-'",
)
RULES = {
    "resource_group": Rule(
        "resource group", r"[-\w.()]{0,89}[-\w()]", "1-90 letters, digits, '-', '_', '.', '(', ')'; not ending in '.'"
    ),
    "log_analytics": Rule(
        "Log Analytics workspace", r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]", "4-63 letters, digits and hyphens"
    ),
    "app_insights": Rule("Application Insights", r"[-\w.()]{1,255}", "1-255 letters, digits, '-', '_', '.', '(', ')'"),
    "storage_account": Rule("storage account", r"[a-z0-9]{3,24}", "3-24 lower-case letters and digits"),
    "key_vault": Rule(
        "Key Vault",
        r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
        "3-24 letters, digits and single hyphens, starting with a letter",
    ),
    "registry": Rule("container registry", r"[A-Za-z0-9]{5,50}", "5-50 letters and digits"),
    "workspace": Rule(
        "Azure ML workspace",
        r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}",
        "3-33 letters, digits, '-' and '_', starting with a letter or digit",
    ),
    "aks": Rule("AKS cluster", r"[A-Za-z0-9][A-Za-z0-9_-]{0,61}[A-Za-z0-9]", "2-63 letters, digits, '-' and '_'"),
    "aks_dns_prefix": Rule(
        "AKS DNS prefix", r"[A-Za-z0-9][A-Za-z0-9-]{0,52}[A-Za-z0-9]", "2-54 letters, digits and hyphens"
    ),
    "cpu_cluster": _COMPUTE,
    "gpu_cluster": _COMPUTE,
    "kubernetes_compute": _COMPUTE,
    "automation_app": Rule("Entra application display name", r".{1,120}", "1-120 characters"),
    "aks_identity": Rule(
        "user-assigned identity", r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}", "3-128 letters, digits, '-' and '_', starting with one"
    ),
    "virtual_network": _NETWORK,
    "nat_gateway": _NETWORK,
    "nat_public_ip": _NETWORK,
    "private_endpoint_prefix": _NETWORK,
    # a valid compute instance name itself, so "<user>-" + it is one for any user part that starts with a letter
    "workstation_suffix": COMPUTE_INSTANCE,
}


# "Length can be 2-32 characters. Alphanumerics, underscore, and hyphen are allowed. ... Needs to start with an
# alphanumeric." (how-to-manage-registries); the REST spec's pattern ^[a-zA-Z0-9][a-zA-Z0-9\-_]{2,32}$ wants 3 or more
ML_REGISTRY_RULE = Rule(
    "Azure ML registry", r"[A-Za-z0-9][A-Za-z0-9_-]{2,31}", "3-32 letters, digits, '-' and '_', starting with a letter or digit"
)


def workstation_user_part(user: str) -> str:
    """What of a user's name goes into their compute instance's name (see Names.workstation)."""
    return re.sub(r"[^a-z0-9]+", "-", user.lower()).strip("-")[:WORKSTATION_USER_LENGTH].rstrip("-")


def stack_suffix(project: str, stack: str, prefix: str, generation: int) -> str:
    """Short, deterministic and lower-case alphanumeric, so every kind of name can carry it."""
    seed = f"{project}/{stack}/{prefix}/{generation}".encode()
    return hashlib.sha256(seed).hexdigest()[:SUFFIX_LENGTH]


@dataclass(frozen=True)
class Names:
    resource_group: str
    log_analytics: str
    app_insights: str
    storage_account: str
    key_vault: str
    registry: str
    workspace: str
    aks: str
    aks_dns_prefix: str
    cpu_cluster: str
    gpu_cluster: str
    kubernetes_compute: str
    automation_app: str
    aks_identity: str
    virtual_network: str
    nat_gateway: str
    nat_public_ip: str
    private_endpoint_prefix: str  # + "-<target>-<group>", e.g. pe-mlp-prod-storage-blob
    workstation_suffix: str  # "<user>-" + this, e.g. ada-ci1a2b3 (see workstation)

    # subnet names are the stack's own, unique within its VNet
    TRAINING_SUBNET = "snet-training"
    AKS_SUBNET = "snet-aks"
    PRIVATE_ENDPOINT_SUBNET = "snet-private-endpoints"

    def private_endpoint(self, target: str, group: str) -> str:
        return f"{self.private_endpoint_prefix}-{target}-{group}"

    def workstation(self, user: str) -> str:
        """The compute instance of the user named `user`: their name in lower case, each run of other characters
        than letters and digits one hyphen, cut to WORKSTATION_USER_LENGTH, then the stack's suffix. Two names
        that differ only in case or punctuation, or only after that length, make the same instance name (the
        settings refuse them)."""
        return f"{workstation_user_part(user)}-{self.workstation_suffix}"

    @classmethod
    def build(cls, project: str, stack: str, prefix: str, generation: int = 0) -> Names:
        suffix = stack_suffix(project, stack, prefix, generation)
        dashed = f"{prefix}-{stack}"
        # storage and registry names allow no hyphens at all
        squashed = f"{prefix}{stack}".replace("-", "")
        return cls(
            resource_group=f"rg-{dashed}",
            log_analytics=f"log-{dashed}-{suffix}",
            app_insights=f"appi-{dashed}-{suffix}",
            storage_account=f"st{squashed}{suffix}",
            key_vault=f"kv-{dashed}-{suffix}",
            registry=f"cr{squashed}{suffix}",
            # the suffix also dodges the name a soft-deleted workspace holds after destroy
            workspace=f"mlw-{dashed}-{suffix}",
            aks=f"aks-{dashed}-{suffix}",
            aks_dns_prefix=f"aks-{dashed}-{suffix}",
            cpu_cluster="cpu-cluster",
            gpu_cluster="gpu-cluster",
            kubernetes_compute="k8s-inference",
            automation_app=f"{project}-{stack}-automation",
            aks_identity=f"id-aks-{dashed}",
            virtual_network=f"vnet-{dashed}",
            nat_gateway=f"ng-{dashed}",
            nat_public_ip=f"pip-ng-{dashed}",
            private_endpoint_prefix=f"pe-{dashed}",
            workstation_suffix=f"ci{suffix}",
        )

    def problems(self) -> list[str]:
        """One line per name that breaks its Azure rule."""
        found = [RULES[f.name].check(getattr(self, f.name)) for f in fields(self)]
        # the longest private endpoint name the network component builds
        found.append(_NETWORK.check(self.private_endpoint("workspace", "amlworkspace")))
        return [problem for problem in found if problem]


@dataclass(frozen=True)
class MlRegistryNames:
    """The ML registry stack's names (ml-registry/). The registry's name is unique in the Entra tenant and can never
    change ("Registry name is unique within your organization (Microsoft Entra tenant)"; "You can't change registry
    names after creation", how-to-manage-registries), so it carries the stack's suffix as every global name does."""

    resource_group: str
    registry: str

    @classmethod
    def build(cls, project: str, stack: str, prefix: str, generation: int = 0) -> MlRegistryNames:
        suffix = stack_suffix(project, stack, prefix, generation)
        return cls(resource_group=f"rg-{prefix}-ml-registry", registry=f"mlr-{prefix}-{suffix}")

    def problems(self) -> list[str]:
        found = (RULES["resource_group"].check(self.resource_group), ML_REGISTRY_RULE.check(self.registry))
        return [problem for problem in found if problem]
