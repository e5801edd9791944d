"""Stack output keys: the one contract between infra/ (which exports them) and jobs/ (which reads them).

Kept free of any Pulumi import so that the post-provision stage can use it without the Pulumi SDK.
"""

SUBSCRIPTION_ID = "subscription_id"
TENANT_ID = "tenant_id"
RESOURCE_GROUP = "resource_group_name"
LOCATION = "location"
WORKSPACE = "workspace_name"
# the stack's environment (azureml-platform:environment: dev, prod...): the workloads' per-environment settings
ENVIRONMENT = "environment"
CPU_CLUSTER = "cpu_cluster_name"
# exported only when the stack's GPU cluster is on (GPU quota is often zero)
GPU_CLUSTER = "gpu_cluster_name"
KUBERNETES_COMPUTE = "kubernetes_compute_name"
KUBERNETES_INSTANCE_TYPE = "kubernetes_instance_type"
KEY_VAULT_URI = "key_vault_uri"
# the workspace's default storage: CI opens its firewall to the runner for the stage's uploads (prod)
STORAGE_ACCOUNT = "storage_account_name"
# "private" when the stack has its own VNet and the data plane (storage, Key Vault, registry) denies the
# internet; "public" otherwise. Managed deployments then need private egress (see jobs/azure/entities.py)
NETWORK_ISOLATION = "network_isolation"
NETWORK_ISOLATION_VALUES = ("public", "private")
REGISTRY_LOGIN_SERVER = "registry_login_server"
AUTOMATION_CLIENT_ID = "automation_client_id"
# each listed data scientist's compute instance: a JSON object, user name -> instance name (not a secret). Always
# exported, an empty object when the stack lists no one (the engine drops only None); read as empty when absent
# (outputs of a stack from before workstations)
WORKSTATIONS = "workstation_names"
# only exported (as a Pulumi secret) when the stack's config asks for a client secret
AUTOMATION_CLIENT_SECRET = "automation_client_secret"
# the ML registry the stack promotes through (config mlRegistry): exported only when it has one. Its name is what an
# MLClient for it takes (registry_name); "publish" (dev) or "read" (every other environment) is what the stack's
# automation identity may do there (infra/ml_registry.py)
ML_REGISTRY_NAME = "ml_registry_name"
ML_REGISTRY_ACCESS = "ml_registry_access"
ML_REGISTRY_ACCESS_VALUES = ("publish", "read")

# every key the post-provision stage needs; a stack exports all of them
REQUIRED = (
    SUBSCRIPTION_ID,
    TENANT_ID,
    RESOURCE_GROUP,
    LOCATION,
    WORKSPACE,
    ENVIRONMENT,
    CPU_CLUSTER,
    KUBERNETES_COMPUTE,
    KUBERNETES_INSTANCE_TYPE,
    KEY_VAULT_URI,
    STORAGE_ACCOUNT,
    NETWORK_ISOLATION,
    REGISTRY_LOGIN_SERVER,
    AUTOMATION_CLIENT_ID,
)
# keys a stack exports only when it has what they name. Never exported as null: the engine drops an
# output whose value is None (pulumi/runtime/rpc.py, serialize_properties), so `pulumi stack output`
# would not show it anyway, and a reader must treat absence as "none"
OPTIONAL = (GPU_CLUSTER, ML_REGISTRY_NAME, ML_REGISTRY_ACCESS)
# keys whose value is a JSON object of names rather than one name: exported by every stack, absence reads as empty
MAPS = (WORKSTATIONS,)
# keys whose value is one of a few words, and those words
CHOICES = {NETWORK_ISOLATION: NETWORK_ISOLATION_VALUES, ML_REGISTRY_ACCESS: ML_REGISTRY_ACCESS_VALUES}
# keys that must only ever be exported as Pulumi secrets
SECRET = (AUTOMATION_CLIENT_SECRET,)

# The ML registry's own stack (ml-registry/): what the environments' stacks read through a StackReference
ML_REGISTRY_STACK = {
    "name": "ml_registry_name",
    "id": "ml_registry_id",
    "location": "ml_registry_location",
    # the registry's system-created storage account and container registry (in its managed resource group): an
    # isolated environment gives each a private endpoint (how-to-registry-network-isolation)
    "storage_id": "ml_registry_storage_id",
    "acr_id": "ml_registry_acr_id",
    # the two custom roles, by their full role definition IDs
    "reader_role_id": "ml_registry_reader_role_id",
    "publisher_role_id": "ml_registry_publisher_role_id",
}
