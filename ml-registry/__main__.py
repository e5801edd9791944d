"""The ML registry's Pulumi program: read and validate its settings, build the registry, export what the environments
read. Its own project (ml-registry/Pulumi.yaml): one stack that outlives every environment's."""

import sys
from pathlib import Path

import pulumi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the program runs from ml-registry/; infra/ is above

from infra import settings as stack_settings  # noqa: E402
from infra.ml_registry import MlRegistry, MlRegistryArgs  # noqa: E402
from infra.naming import MlRegistryNames  # noqa: E402

settings = stack_settings.load_ml_registry()
names = MlRegistryNames.build(settings.project, settings.stack, settings.name_prefix, settings.name_generation)
registry = MlRegistry("ml-registry", MlRegistryArgs(settings, names))
for key, value in registry.exports().items():
    pulumi.export(key, value)
