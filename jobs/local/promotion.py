"""Promotion's two local pieces (jobs/promotion.py): an environment on this machine (`--env NAME`: its MLflow store,
runs and served models under `<work dir>/<NAME>/`) and the ML registry folder `<work dir>/ml-registry/`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jobs.flow import FlowError, RegisteredModel, Report, model_folder
from jobs.local.target import LocalTarget
from jobs.promotion import ENVIRONMENT_FILE, FILES_TAG, Published, file_hashes, files_digest
from jobs.workloads import Workload

ML_REGISTRY_FOLDER = "ml-registry"
LINEAGE_FILE = "lineage.json"


class LocalEnvironment:
    """A local target as promotion's environment. What serves now is recorded in `<work dir>/serving/<workload>.json`
    (a local server lives only as long as its command)."""

    def __init__(self, name: str, target: LocalTarget):
        self.name, self.target = name, target
        self._prepared: set[str] = set()

    def registered_model(self, workload: Workload, version: str | None = None) -> RegisteredModel:
        return self.target.registered_model(workload, version)

    def model_files(self, model: RegisteredModel) -> Path:
        return model_folder(self.target.model_dir(model))

    def model_tags(self, model: RegisteredModel) -> dict[str, str]:
        return dict(self.target.client.get_model_version(model.name, model.version).tags)

    def data_file(self, workload: Workload) -> Path:
        if workload.name not in self._prepared:
            self.target.prepare([workload], lambda line: None)
            self._prepared.add(workload.name)
        return self.target.data_files[workload.data.key]

    def _serving_file(self, workload: Workload) -> Path:
        return self.target.work_dir / "serving" / f"{workload.name}.json"

    def live_version(self, workload: Workload) -> str | None:
        path = self._serving_file(workload)
        return json.loads(path.read_text())["version"] if path.is_file() else None

    def register_promoted(self, workload: Workload, files: Path, tags: dict[str, str], report: Report) -> RegisteredModel:
        """The files copied into this environment's own folder, registered as its next version with `tags`."""
        client = self.target.client
        if not client.search_registered_models(filter_string=f"name='{workload.model}'"):
            client.create_registered_model(workload.model)
        copy = self.target.work_dir / "promoted" / workload.model / tags["promotion.ml_registry_version"]
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(files, copy)
        version = client.create_model_version(workload.model, str(copy), tags=tags)
        report(f"registered as {workload.model}:{version.version} in {self.name}")
        return RegisteredModel(workload.model, str(version.version), workload.metric, float(tags[workload.metric]),
                               tags.get("lineage.source_run", ""))  # fmt: skip

    def served(self, workload: Workload, model: RegisteredModel) -> None:
        path = self._serving_file(workload)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": model.version}) + "\n")


class LocalMlRegistry:
    """The ML registry on this machine: `<root>/<name>/<version>/` holding model/, lineage.json and conda.yaml,
    never changed once written."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def versions(self, name: str) -> list[Published]:
        found = [self._published(name, path) for path in (self.root / name).glob("*") if (path / LINEAGE_FILE).is_file()]
        return sorted(found, key=lambda published: int(published.version))

    @staticmethod
    def _published(name: str, folder: Path) -> Published:
        return Published(name, folder.name, json.loads((folder / LINEAGE_FILE).read_text()), str(folder))

    def get(self, name: str, version: str) -> Published:
        for published in self.versions(name):
            if published.version == str(version):
                return published
        known = ", ".join(p.version for p in self.versions(name)) or "none"
        raise FlowError(f"ML registry {self.root}: no {name} version {version} (published: {known})")

    def publish(self, name: str, files: Path, lineage: dict, report: Report) -> tuple[Published, bool]:
        """The model's files as the next version, with its lineage and its conda spec; a model already published
        (the same files) is answered as that version, and False says nothing new was written."""
        environment = files / ENVIRONMENT_FILE
        if not environment.is_file():
            raise FlowError(f"{files}: the model has no {ENVIRONMENT_FILE}, so the ML registry could not hold the "
                            "environment it serves with")  # fmt: skip
        hashes = file_hashes(files)
        for published in self.versions(name):
            if published.lineage.get("files") == hashes:
                return published, False
        versions = self.versions(name)
        version = str(int(versions[-1].version) + 1 if versions else 1)
        folder = self.root / name / version
        partial = folder.with_name(f".{version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(files, partial / "model")
        shutil.copy2(environment, partial / ENVIRONMENT_FILE)
        (partial / LINEAGE_FILE).write_text(json.dumps({**lineage, "files": hashes, FILES_TAG: files_digest(hashes)}, indent=2) + "\n")
        partial.rename(folder)  # a version appears whole or not at all
        return self._published(name, folder), True

    def download(self, published: Published) -> Path:
        folder = Path(published.reference)
        if not (folder / ENVIRONMENT_FILE).is_file():
            raise FlowError(f"ML registry {self.root}: {published.name}:{published.version} has no environment ({ENVIRONMENT_FILE})")
        return folder / "model"


# the weaker dev run of the demonstration: its first candidate only, on this share of the rows
WEAKER_SHARE = 0.03


def demo(data_dir: Path, work_dir: Path, workloads: list[Workload], report: Report, automl_minutes: float | None = None) -> int:
    """The whole path on this machine, for each workload: dev trains and prod gets its champion unchanged (file
    hashes, lineage); a weaker dev run (its first candidate on a few rows) is refused naming both figures; --force
    rolls it out all the same; --rollback restores the first. Each rollout answers the sample. 0 when every step
    came out as expected, 1 otherwise."""
    from jobs import flow, promotion
    from jobs.local.target import AUTOML_MINUTES

    expected: list[tuple[str, bool]] = []
    registry = LocalMlRegistry(work_dir / ML_REGISTRY_FOLDER)
    for workload in workloads:
        say = flow.stamped(report, workload.name)
        options = dict(workers=1, automl_minutes=automl_minutes or AUTOML_MINUTES)
        dev = LocalEnvironment("dev", LocalTarget(data_dir, work_dir / "dev", **options))
        prod = LocalEnvironment("prod", LocalTarget(data_dir, work_dir / "prod", **options))
        try:
            say("dev trains every candidate and registers the best")
            flow.run(dev.target, [workload], say)
            champion = dev.registered_model(workload)
            served = promotion.promote(dev, prod, registry, workload, say)
            same = file_hashes(dev.model_files(champion)) == file_hashes(prod.model_files(served))
            tags = prod.model_tags(served)
            expected.append((f"{workload.name}: prod serves dev's {champion.name}:{champion.version} byte for byte (as "
                             f"{served.name}:{served.version}), tagged lineage.source_version={tags.get('lineage.source_version')}",
                             same and tags.get("lineage.source_version") == champion.version))  # fmt: skip
            weaker = _weaker_run(dev, workload, work_dir, options, say)
            try:
                promotion.promote(dev, prod, registry, workload, say, version=weaker)
                expected.append((f"{workload.name}: the weaker dev model {weaker} is refused", False))
            except promotion.PromotionRefused as refused:
                say(f"refused: {refused}")
                expected.append((f"{workload.name}: the weaker dev model {weaker} is refused, naming both figures",
                                 str(refused).count(f"{workload.metric}=") == 2))  # fmt: skip
            forced = promotion.promote(dev, prod, registry, workload, say, version=weaker, force=True)
            restored = promotion.rollback(prod, workload, say)
            expected.append((f"{workload.name}: --force serves {forced.version}, --rollback serves {served.version} again",
                             prod.live_version(workload) == restored.version == served.version))  # fmt: skip
        finally:
            dev.target.close()
            prod.target.close()
    for what, held in expected:
        report(f"{'as expected' if held else 'NOT as expected'}: {what}")
    return 0 if all(held for _, held in expected) else 1


def _weaker_run(dev: LocalEnvironment, workload: Workload, work_dir: Path, options: dict, report: Report) -> str:
    """A real, weaker dev model: the workload's first candidate trained on a few of the rows; its registered version."""
    import dataclasses

    from jobs import flow
    from jobs.flow import source_module

    tabular = source_module("tabular")
    frame = tabular.read_table(dev.data_file(workload))
    small = work_dir / "dev-weaker-data"
    small.mkdir(parents=True, exist_ok=True)
    sample = frame.sample(frac=WEAKER_SHARE, random_state=0)
    sample.to_csv(small / workload.data.file, index=False)  # tabular.read_table finds the delimiter itself
    report(f"a weaker dev run: {workload.jobs[0].key} alone on {len(sample):,} of {len(frame):,} rows")
    target = LocalTarget(small, work_dir / "dev", **options)
    try:
        flow.run(target, [dataclasses.replace(workload, jobs=workload.jobs[:1], batch=False)], report)
        return target.registered_model(workload).version
    finally:
        target.close()
