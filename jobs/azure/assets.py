"""Data and environment assets for Azure ML, built from the workloads' data (workloads/*/workload.yml) and
`jobs/specs/environments/`.

Every asset is content-addressed: its version is a digest of what it holds, so a re-run with unchanged
content finds the version already registered and registers nothing, and job names derived from these
versions stay the same.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml
from azure.ai.ml import load_environment
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data, Environment

from jobs.workloads import Workload, locate_data

JOBS_DIR = Path(__file__).parent.parent
ENVIRONMENTS_DIR = JOBS_DIR / "specs" / "environments"
CODE_DIR = JOBS_DIR / "src"
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


@functools.cache
def tabular():
    """The training code's shared module (jobs/src/tabular.py): the one definition of the held-out split."""
    spec = importlib.util.spec_from_file_location("tabular", CODE_DIR / "tabular.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        content = yaml.safe_load(spec.read_text())
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
