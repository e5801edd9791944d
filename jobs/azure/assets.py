"""Data and environment assets for Azure ML, built from the workloads' data (workloads/*/workload.yml) and
`jobs/specs/environments/`.

Every asset is content-addressed: its version is a digest of what it holds, so a re-run with unchanged
content finds the version already registered and registers nothing, and job names derived from these
versions stay the same.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml
from azure.ai.ml import load_environment
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data, Environment

from jobs.flow import source_module
from jobs.workloads import Workload, load_yaml, locate_data

JOBS_DIR = Path(__file__).parent.parent
ENVIRONMENTS_DIR = JOBS_DIR / "specs" / "environments"
# downloaded sources and the MLTable folders built from them (git-ignored)
WORK_DIR = JOBS_DIR.parent / ".local" / "azure-assets"
VERSION_CHARS = 12
DIGEST_TAG = "content-sha256"
# the version shown by a dry run for data that is not on this machine (it never downloads)
UNRESOLVED = "unresolved"


def digest_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over the files' names (relative to `root`) and bytes, in a stable order."""
    sha = hashlib.sha256()
    for path in sorted(paths):
        sha.update((os.path.relpath(path, root) if root else path.name).encode() + b"\0")
        sha.update(path.read_bytes())
    return sha.hexdigest()


def digest_folder(folder: Path) -> str:
    files = [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return digest_files(files, folder)


def digest_text(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def tabular():
    """The training code's shared module (jobs/src/tabular.py): the one definition of the held-out split."""
    return source_module("tabular")


@dataclass(frozen=True)
class Asset:
    """An entity to register and the digest of its content (its version's source)."""

    entity: Data | Environment
    digest: str

    @property
    def name(self) -> str:
        return self.entity.name

    @property
    def version(self) -> str:
        return self.entity.version

    @property
    def reference(self) -> str:
        return f"azureml:{self.name}:{self.version}"


def _asset(entity: Data | Environment, digest: str) -> Asset:
    entity.version = digest[:VERSION_CHARS]
    entity.tags = {**(entity.tags or {}), DIGEST_TAG: digest}
    return Asset(entity, digest)


def data_assets(workloads: list[Workload], data_dir: Path | None, offline: bool = False) -> list[Asset]:
    """Per workload's data: `<key>` (uri_file, every row), `<key>-mltable` (the training rows) and
    `<key>-test-mltable` (the held-out rows train.py and the MLP test on), for AutoML's training_data and
    test_data. A source that is not on this machine while `offline` gets a placeholder path and version."""
    assets = []
    for workload in workloads:
        entry = workload.data
        csv = locate_data(workload, data_dir, WORK_DIR / "sources" / entry.key, offline)
        description = f"{entry.key} ({entry.task}, target {entry.target!r}) from {entry.source}"
        folders = {}
        if csv is not None:
            shared = tabular()
            frame = shared.read_table(csv)
            folders = shared.write_split(frame, entry.target, entry.task, WORK_DIR / "mltable" / entry.key)
        for name, kind, part in (
            (entry.key, AssetTypes.URI_FILE, None),
            (f"{entry.key}-mltable", AssetTypes.MLTABLE, "train"),
            (f"{entry.key}-test-mltable", AssetTypes.MLTABLE, "test"),
        ):
            rows = {
                None: "every row",
                "train": "the training rows of the shared seeded split",
                "test": "the held-out rows of the shared seeded split",
            }[part]
            if csv is None:
                path, digest = entry.source, UNRESOLVED
            elif part is None:
                path, digest = str(csv.resolve()), digest_files([csv])
            else:
                path, digest = str(folders[part]), digest_folder(folders[part])
            entity = Data(name=name, type=kind, path=path, description=f"{description}: {rows}")
            assets.append(_asset(entity, digest))
    return assets


def environment_assets() -> list[Asset]:
    """Every environment spec under jobs/specs/environments/, versioned by its spec, conda file and build context."""
    assets = []
    for spec in sorted(ENVIRONMENTS_DIR.glob("*.yml")):
        content = load_yaml(spec.read_text())
        if not isinstance(content, dict) or not ({"image", "build"} & content.keys()):
            continue  # a conda file beside the environment specs
        environment = load_environment(spec)
        files = {spec.resolve()}
        conda = content.get("conda_file")
        if conda:
            files.add((spec.parent / conda).resolve())
        if environment.build and environment.build.path:
            context = (spec.parent / environment.build.path).resolve()
            files |= {p for p in context.rglob("*") if p.is_file()}
        assets.append(_asset(environment, digest_files(files, ENVIRONMENTS_DIR)))
    return assets


# A model that brings its environment (an Azure AutoML model, whose pickled pipeline needs the AutoML runtime)
# is served in one built from its own conda file plus what serving adds, as Azure documents for an MLflow model
# deployed with a scoring script: azureml-inference-server-http online (how-to-deploy-mlflow-models-online-endpoints,
# "Customize MLflow model deployments"), azureml-core in batch (how-to-mlflow-batch, "Customize model deployment
# with scoring script"), both on this image. Keyed by the stage's environment each one stands in for; score.py also
# needs inference-schema, and batch_score.py's inputs the dataset runtime (as jobs/specs/environments/batch.yml).
# Unpinned: pip picks what fits the model's own pins (AutoML's azureml-defaults pins the server to ~=1.4).
MODEL_ENVIRONMENT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
SERVING_PACKAGES = {
    # azureml-ai-monitoring: score.py's data collector client (the model's inputs and outputs)
    "tabular-inference": ("azureml-inference-server-http", "inference-schema", "azureml-ai-monitoring"),
    "tabular-batch": ("azureml-core", "azureml-dataset-runtime[fuse]"),
}
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _package_name(requirement: str) -> str | None:
    """`scikit-learn=1.5.1`, `azureml-core~=1.62.0`, `azureml-dataset-runtime[fuse]` -> the normalized name."""
    match = _REQUIREMENT_NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match[1]).lower() if match else None


def model_conda(model_folder: Path) -> dict:
    """The conda environment an MLflow model was saved with (MLmodel's python_function `env`)."""
    mlmodel = model_folder / "MLmodel"
    flavor = (load_yaml(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    env = flavor.get("env")
    name = env.get("conda") if isinstance(env, dict) else env  # MLflow 1.x wrote the file name alone
    if not name or not (model_folder / name).is_file():
        raise ValueError(f"{mlmodel}: names no conda environment file (python_function.env.conda) beside it")
    conda = load_yaml((model_folder / name).read_text())
    if not isinstance(conda, dict) or not isinstance(conda.get("dependencies"), list):
        raise ValueError(f"{model_folder / name}: not a conda environment (no `dependencies` list)")
    return conda


def with_pip_packages(conda: dict, packages: Iterable[str]) -> dict:
    """`conda` with each of `packages` it does not list already (by name, conda or pip) added to its pip section."""
    dependencies = [dict(item) if isinstance(item, dict) else item for item in conda["dependencies"]]
    pip = next((item for item in dependencies if isinstance(item, dict) and "pip" in item), None)
    listed = {_package_name(str(item)) for item in dependencies if not isinstance(item, dict)}
    listed |= {_package_name(str(item)) for item in (pip or {}).get("pip", [])}
    missing = [package for package in packages if _package_name(package) not in listed]
    if missing:
        if pip is None:
            pip = {"pip": []}
            dependencies += ([] if "pip" in listed else ["pip"]) + [pip]
        pip["pip"] = [*pip["pip"], *missing]
    return {**conda, "dependencies": dependencies}


def model_environment_name(model_name: str, stands_for: str) -> str:
    """`<model>-inference` in place of tabular-inference, `<model>-batch` in place of tabular-batch."""
    return f"{model_name}-{stands_for.rsplit('-', 1)[-1]}"


def model_environments(model_folder: Path, model_name: str) -> dict[str, Asset]:
    """The environments a model that brings its own is served in, keyed by the stage's environment each stands
    in for: `<model>-inference` and `<model>-batch`, versioned by their content like every environment here."""
    conda = model_conda(model_folder)
    environments = {}
    for stands_for, packages in SERVING_PACKAGES.items():
        spec = with_pip_packages(conda, packages)
        entity = Environment(
            name=model_environment_name(model_name, stands_for),
            image=MODEL_ENVIRONMENT_IMAGE,
            conda_file=spec,
            description=f"{model_name}'s own conda environment, in place of {stands_for}, with {', '.join(packages)}",
        )
        environments[stands_for] = _asset(entity, digest_text(MODEL_ENVIRONMENT_IMAGE, yaml.safe_dump(spec, sort_keys=True)))
    return environments
