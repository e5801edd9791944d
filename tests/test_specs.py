"""Every Azure ML spec (the workloads' jobs, the shared environments and endpoints under jobs/specs) loads
and validates offline with azure-ai-ml, and agrees with the code and data it names: the scripts accept the
arguments the commands pass, the search space is what the command uses, a job reads its workload's data,
target and task, environments exist and pin what uv.lock pins."""

from __future__ import annotations

import ast
import random
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_environment, load_job, load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import Command
from azure.ai.ml.sweep import SweepJob
from azure.ai.ml._utils._asset_utils import get_ignore_file
from azure.ai.ml.entities._job.automl.automl_job import AutoMLJob

from infra.constraints import deployment_fits_instance_type
from jobs.flow import SOURCE_DIR, SPECS_DIR
from jobs.local.specs import render, sample
from jobs.workloads import WORKLOADS_DIR, load_workloads

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jobs" / "src"
sys.path.insert(0, str(SRC))  # the training scripts import their siblings, as they do in a job

WORKLOADS = {workload.name: workload for workload in load_workloads()}
# the workloads' candidate jobs (their retraining pipelines and schedules: tests/test_pipeline.py)
JOB_SPECS = sorted(job.spec for workload in load_workloads() for job in workload.jobs)
ENVIRONMENT_DIR = SPECS_DIR / "environments"
ENVIRONMENT_SPECS = sorted(p for p in ENVIRONMENT_DIR.glob("*.yml") if "image" in yaml.safe_load(p.read_text()))
# the online ones (the batch endpoint and deployment: tests/test_batch.py)
ENDPOINT_SPECS = sorted(p for p in (SPECS_DIR / "endpoints").glob("*.yml") if not p.name.startswith("batch-"))
# the online ones; the batch endpoint and deployment load with their own loaders (tests/test_batch.py)
ONLINE_SPECS = [path for path in ENDPOINT_SPECS if not path.name.startswith("batch-")]
ASSET = re.compile(r"^azureml:([\w-]+)@latest$")


def read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def reference(value) -> str:
    """An asset or compute reference as written in a spec (`azureml:x`), whether or not loading dropped the prefix."""
    value = str(value)
    return value if value.startswith("azureml:") else f"azureml:{value}"


def load(path: Path):
    job = load_job(path)
    if isinstance(job, Command):  # a command job spec loads as a pipeline node
        result = job._validate()
        assert result.passed, result.error_messages
        job = job._to_job()
    return job


def environment_names() -> set[str]:
    return {read(path)["name"] for path in ENVIRONMENT_SPECS}


def ids(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def workload_of(path: Path):
    return WORKLOADS[path.parent.name]


def test_every_spec_in_a_workload_folder_is_one_of_its_candidates():
    """A spec left in a folder but not listed would silently never run."""
    candidates = {job.spec for workload in WORKLOADS.values() for job in workload.jobs}
    assert candidates == set(JOB_SPECS)


def test_the_code_snapshot_leaves_out_what_local_runs_leave_in_the_code_folder():
    """Every spec's `code` is jobs/src, and Python writes its bytecode there (the Makefile keeps it): azure-ai-ml's own
    ignore-file lookup, the one it applies when it uploads a job's or a deployment's code, leaves it out."""
    codes = {(path.parent / read(path)["code"]).resolve() for path in JOB_SPECS if "code" in read(path)}
    assert codes == {SOURCE_DIR}
    ignored = get_ignore_file(SOURCE_DIR)
    assert ignored.path == SOURCE_DIR / ".amlignore"
    kept = [SOURCE_DIR / "score.py", SOURCE_DIR / "train.py"]
    left_out = [SOURCE_DIR / "__pycache__" / "score.cpython-311.pyc", SOURCE_DIR / "mlruns" / "0" / "meta.yaml"]
    assert [ignored.is_file_excluded(path) for path in kept + left_out] == [False, False, True, True]


@pytest.mark.parametrize("path", JOB_SPECS, ids=ids)
def test_job_spec_validates(path):
    job = load(path)  # schema validation: unknown fields, bad enums and missing fields raise
    assert job._to_rest_object() is not None  # the request `az ml job create` would send
    workload = workload_of(path)
    # the studio groups a workload's runs in one experiment; the display name is the flow's job key
    assert job.experiment_name == workload.name and job.display_name == f"{workload.name}-{path.stem}"
    assert reference(job.compute) in ("azureml:cpu-cluster", "azureml:gpu-cluster")  # placeholders the Azure target overrides


@pytest.mark.parametrize("path", [p for p in JOB_SPECS if read(p)["type"] in ("command", "sweep")], ids=ids)
def test_a_command_reads_its_workloads_data_target_and_task(path):
    spec, workload = read(path), workload_of(path)
    inputs = spec["inputs"]
    assert inputs["data"]["path"] == f"azureml:{workload.data.key}@latest"
    assert inputs["target"] == workload.data.target
    assert inputs.get("task", "regression") == workload.task  # train_mlp.py is a regressor only


def filled_in(spec: dict) -> dict[str, dict[str, str]]:
    """Values for the command's placeholders, as a target gives them: data as paths, a sampled trial."""
    inputs = {k: f"/data/{k}" if isinstance(v, dict) else str(v) for k, v in (spec.get("inputs") or {}).items()}
    outputs = {name: f"/data/{name}" for name in spec.get("outputs") or {}}
    trial = sample(spec.get("search_space") or {}, random.Random(0), {})
    return {"inputs": inputs, "outputs": outputs, "search_space": {k: str(v) for k, v in trial.items()}}


@pytest.mark.parametrize("path", [p for p in JOB_SPECS if read(p)["type"] in ("command", "sweep")], ids=ids)
def test_script_takes_every_value_the_command_passes(path):
    spec = read(path)
    command = spec.get("trial", spec)
    values = filled_in(spec)
    words = shlex.split(render(command["command"], values))  # the local target's substitution
    assert words[0] == "python", "commands run a script with plain `python SCRIPT ...`"
    script = (path.parent / command["code"] / words[1]).resolve()
    assert script.is_file(), f"{path.name}: {script} not found"
    args = __import__(script.stem).parse_args(words[2:])
    # each input and search space parameter reaches the script's argument of the same name
    for kind in ("inputs", "search_space"):
        for name, value in values[kind].items():
            assert str(getattr(args, name)) == value, f"{path.name}: {kind}.{name} does not reach --{name}"
    assert str(args.output).startswith("/data/")


def test_sweep_tunes_the_mlp_on_held_out_mae_with_bandit_termination():
    job = load(WORKLOADS_DIR / "housing" / "mlp-sweep.yml")
    assert isinstance(job, SweepJob)
    assert getattr(job.sampling_algorithm, "type", job.sampling_algorithm) == "random"
    assert set(job.search_space) == {"batch_size", "epochs", "units_1", "units_2", "learning_rate"}
    assert job.objective.primary_metric == "MAE" and job.objective.goal == "minimize"
    assert job.early_termination.type == "bandit"
    # the bandit policy needs per-epoch MAE to act before the shortest trial ends
    shortest = min(job.search_space["epochs"].values)
    assert job.early_termination.delay_evaluation + job.early_termination.evaluation_interval < shortest
    assert job.limits.max_total_trials >= job.limits.max_concurrent_trials > 1
    assert reference(job.compute) == "azureml:gpu-cluster"


@pytest.mark.parametrize("path", [p for p in JOB_SPECS if read(p)["type"] == "automl"], ids=ids)
def test_automl_spec_reads_its_workloads_data(path):
    job, data = load(path), workload_of(path).data
    assert isinstance(job, AutoMLJob)
    assert reference(job.training_data.path) == f"azureml:{data.key}-mltable@latest"
    # the held-out rows of the shared split, so AutoML's test metrics compare with the other jobs'
    assert reference(job.test_data.path) == f"azureml:{data.key}-test-mltable@latest"
    assert job.target_column_name == data.target and job.task_type.lower() == data.task
    assert job.training_data.type == job.test_data.type == "mltable"


def test_automl_primary_metrics_and_explanations():
    regression = load(WORKLOADS_DIR / "housing" / "automl-regression.yml")
    classification = load(WORKLOADS_DIR / "bank-marketing" / "automl-classification.yml")
    assert str(regression.primary_metric).lower().endswith("normalized_root_mean_squared_error")
    assert str(classification.primary_metric).lower().endswith("auc_weighted")
    assert classification.target_column_name == "y"
    assert classification.training.enable_model_explainability is True


@pytest.mark.parametrize("path", ENVIRONMENT_SPECS, ids=lambda p: p.stem)
def test_environment_spec_validates(path):
    environment = load_environment(path)
    environment.validate()
    assert environment._to_rest_object() is not None
    conda = read(path.parent / read(path)["conda_file"])
    assert any(str(d).startswith("python=") for d in conda["dependencies"]), f"{path.name}: python is not pinned"


def locked_versions() -> dict[str, str]:
    """{package: version} of every package uv.lock pins (the project's one source of versions)."""
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"].lower(): package["version"] for package in lock["package"] if "version" in package}


def test_the_installed_packages_are_the_locked_versions():
    """An install from the lock matches the lock: every package in this environment at the version uv.lock pins."""
    from importlib.metadata import distributions

    locked = locked_versions()
    # pip (and setuptools) are what `python -m venv` seeds an environment with; `uv sync` leaves them be
    seeded = {"pip", "setuptools", "wheel"}
    installed = {name: dist.version for dist in distributions()
                 if (name := re.sub(r"[-_.]+", "-", dist.metadata["Name"].lower())) not in seeded}  # fmt: skip
    assert {name: (version, locked.get(name)) for name, version in installed.items() if locked.get(name) != version} == {}
    # and every group is there (`make test` installs them all): pytest's own group and the Pulumi program's, at least
    assert {"pytest", "pulumi-azure-native", "azure-ai-ml", "jax"} <= set(installed)


def pip_pins(path: Path) -> dict[str, str]:
    """{package: version} of a conda file's pip section (local labels dropped)."""
    lines = next(d["pip"] for d in read(path)["dependencies"] if isinstance(d, dict))
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line} is not pinned"
            pins[name.lower()] = version.split("+")[0]
    return pins


# the pins an environment holds apart from the lock, and why (its conda file says so too). torch is not in the lock
# at all (the project's Keras backend is JAX: pyproject.toml), so each Azure environment pins it alone
_SKINNY = "azureml-mlflow, which tracks the job in Azure ML, caps mlflow-skinny at 3.15.0"
APART = {
    "batch": {"numpy": "azureml-dataset-runtime 1.62.0.post1, which batch deployments need, requires numpy<2.3.3"},
    "training-cpu": {"mlflow-skinny": _SKINNY},
    "training-gpu": {"mlflow-skinny": _SKINNY},
}


@pytest.mark.parametrize("path", ENVIRONMENT_SPECS, ids=lambda p: p.stem)
def test_environment_pins_agree_with_requirements(path):
    ours = locked_versions()
    theirs = pip_pins(path.parent / read(path)["conda_file"])
    apart = APART.get(path.stem, {})
    different = {
        name: (version, ours[name]) for name, version in theirs.items() if ours.get(name, version) != version and name not in apart
    }
    assert not different, f"{path.name}: (environment, uv.lock) versions differ: {different}"
    assert all(theirs.get(name) != ours.get(name) for name in apart), f"{path.name}: {apart} agrees now; drop it from APART"


def test_every_environment_a_spec_names_is_defined():
    referenced = []
    for path in JOB_SPECS + ENDPOINT_SPECS:
        spec = read(path)
        environment = spec.get("trial", spec).get("environment")
        if isinstance(environment, str):
            referenced.append((path.name, environment))
    assert referenced
    names = environment_names()
    unknown = [(spec, ref) for spec, ref in referenced if not ASSET.match(ref) or ASSET.match(ref)[1] not in names]
    assert not unknown, f"environments not defined under {ENVIRONMENT_DIR}: {unknown}"


# an Azure AutoML winner serves in its own environment, on the AutoML runtime's Python: 3.9 to 3.11
# (azureml-train-automl-runtime 1.62's Requires-Python; jobs/azure/assets.py SERVING_PACKAGES)
SERVING_SCRIPTS = ("score.py", "scoring.py", "batch_score.py")


@pytest.mark.parametrize("name", SERVING_SCRIPTS)
def test_the_serving_scripts_run_on_the_oldest_python_automl_serves_on(name):
    text = (SRC / name).read_text()
    ast.parse(text, filename=name, feature_version=(3, 9))
    # annotations such as `Scorer | None` are evaluated at import on 3.9 unless postponed
    assert "from __future__ import annotations" in text
    with pytest.raises(SyntaxError):  # what the check catches: a 3.10 `match`, say
        ast.parse("match value:\n    case 1:\n        pass\n", feature_version=(3, 9))


def is_deployment(spec: dict) -> bool:
    return "endpoint_name" in spec or "model" in spec


@pytest.mark.parametrize("path", ONLINE_SPECS, ids=lambda p: p.stem)
def test_endpoint_spec_validates(path):
    spec = read(path)
    if not is_deployment(spec):
        endpoint = load_online_endpoint(path)
        assert endpoint.auth_mode == "key"
        assert endpoint._to_rest_online_endpoint(location="westeurope") is not None
        return
    deployment = load_online_deployment(path)
    assert deployment._to_rest_object(location="westeurope") is not None
    assert deployment.app_insights_enabled is True
    code = deployment.code_configuration
    assert code is not None, f"{path.name}: no code_configuration, so no scoring script"
    assert (path.parent / code.code / code.scoring_script).is_file(), f"{path.name}: scoring script not found"


def instance_type_resources(stack: str) -> dict:
    from infra.stacks import stack_config

    instance_type = stack_config(stack, ROOT)["azureml-platform:inference"]["instanceType"]
    return {part: {kind: instance_type[f"{kind}{part[:-1].capitalize()}"] for kind in ("cpu", "memory")} for part in ("requests", "limits")}


@pytest.mark.parametrize("stack", sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml")))
def test_kubernetes_deployment_fits_the_stacks_instance_type(stack):
    """The scoring pod's resources keep the rules of "Create and manage instance types" against the instance
    type the stack creates (infra/constraints.py)."""
    spec = read(SPECS_DIR / "endpoints" / "kubernetes-deployment.yml")
    scoring_script = bool((spec.get("code_configuration") or {}).get("scoring_script"))
    assert scoring_script, "a custom deployment: the no-code MLflow minimum (infra/constraints.py) does not apply"
    assert deployment_fits_instance_type(spec["resources"], instance_type_resources(stack), scoring_script) == []


def test_a_no_code_mlflow_deployment_below_its_minimum_is_caught():
    """The same requests without a scoring script would fail: an MLflow no-code deployment needs 2 cores and 4 GB."""
    resources = read(SPECS_DIR / "endpoints" / "kubernetes-deployment.yml")["resources"]
    ceiling = {"limits": {"cpu": "8", "memory": "16Gi"}}
    assert deployment_fits_instance_type(resources, ceiling, scoring_script=False) == [
        f"requests.cpu is {resources['requests']['cpu']!r}; an MLflow deployment without a scoring script needs at least 2",
        f"requests.memory is {resources['requests']['memory']!r}; an MLflow deployment without a scoring script needs at least 4Gi",
    ]


def test_a_deployment_at_its_instance_types_limit_is_caught():
    """"the resource limits must be less than the instance type limits. Otherwise, deployment fails." """
    ceiling = instance_type_resources("dev")
    at_the_limit = {"requests": {"cpu": "100m", "memory": "512Ki"}, "limits": dict(ceiling["limits"])}
    assert deployment_fits_instance_type(at_the_limit, ceiling) == [
        "requests.memory must be at least 1 MB",
        f"limits.cpu {ceiling['limits']['cpu']} is not less than the instance type's {ceiling['limits']['cpu']}",
        f"limits.memory {ceiling['limits']['memory']} is not less than the instance type's {ceiling['limits']['memory']}",
    ]
