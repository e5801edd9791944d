"""The production loop: the drift gate of the retraining pipelines (gate.py), each endpoint's monitor in Azure
(created by `schedule` against the fake workspace, Azure's own where serverless Spark can run and monitor.py in a
scheduled pipeline where it cannot), the data assets each deployment's collector writes to, the workloads'
monitor section, and the local demonstration of the whole loop on generated data."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from azure.ai.ml.entities import JobSchedule, MonitorSchedule
from azure.ai.ml.entities._load_functions import load_schedule

from infra import outputs as keys
from jobs import cli, flow, monitoring
from jobs.azure import commands as azure_commands, entities, monitoring as azure_monitoring
from jobs.flow import COLLECTOR_ROOT, SOURCE_DIR, FlowError, RegisteredModel
from jobs.local.target import LocalTarget
from jobs.workloads import WorkloadError, load_workload
from tests.bank_sample import bank_frame
from tests.test_score import trained_root
from tests.test_azure_stage import BANK, HOUSING, OUTPUTS, WORKLOADS, endpoint, stage
from tests.test_workloads import copy_of, edit

sys.path.insert(0, str(SOURCE_DIR))  # gate.py, as the pipeline's steps import it
import gate  # noqa: E402

PRIVATE = {**OUTPUTS, keys.NETWORK_ISOLATION: "private", keys.ENVIRONMENT: "prod"}


# -- the gate ------------------------------------------------------------------------------------------------


def monitor(code: int, output: Path, failed: tuple[str, ...] = ()) -> list[str]:
    """A stand-in for monitor.py: writes a signals.json in which `failed` failed, and exits with `code`."""
    signals = {name: {"passed": name not in failed} for name in ("data_drift", "prediction_drift", "data_quality")}
    body = json.dumps({"signals": signals})
    script = f"import pathlib, sys; pathlib.Path({str(output)!r}).mkdir(exist_ok=True); " \
             f"pathlib.Path({str(output / gate.SIGNALS_FILE)!r}).write_text({body!r}); sys.exit({code})"
    return [sys.executable, "-c", script]


def decide(tmp_path: Path, code: int, failed: tuple[str, ...] = (), *options: str) -> int:
    return gate.main(["decide", "--signals", str(tmp_path / "signals"), "--decision", str(tmp_path / "decision"),
                      *options, "--", *monitor(code, tmp_path / "signals", failed)])  # fmt: skip


def decision(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "decision" / gate.DECISION_FILE).read_text())


@pytest.mark.parametrize(
    "code, failed, force, train",
    [
        (0, (), "false", False),
        (1, ("data_drift",), "false", True),
        (1, ("prediction_drift", "data_quality"), "false", True),
        (1, ("data_quality",), "false", False),  # an alert: retraining on the same data cannot mend the inputs
        (0, (), "true", True),
    ],
)
def test_the_gate_trains_when_drift_failed_or_when_forced(tmp_path, code, failed, force, train):
    assert decide(tmp_path, code, failed, "--force", force) == 0
    made = decision(tmp_path)
    assert (made["train"], set(made["failed"]), made["monitor_exit_code"]) == (train, set(failed), code)


def test_input_the_monitor_cannot_use_fails_the_gate_never_reads_as_no_drift(tmp_path, capsys):
    assert decide(tmp_path, 2, (), "--force", "true") == 2
    assert not (tmp_path / "decision").exists() and "could not judge the data (exit code 2)" in capsys.readouterr().err


def test_as_a_monitor_job_of_its_own_any_failed_signal_fails_the_step(tmp_path):
    assert decide(tmp_path, 1, ("data_quality",), "--mode", "alert") == 1
    assert decision(tmp_path)["failed"] == ["data_quality"]
    assert decide(tmp_path, 0, (), "--mode", "alert") == 0


@pytest.mark.parametrize("decision, runs", [(None, True), ({"train": True, "reason": "a signal failed"}, True),
                                            ({"train": False, "reason": "every signal passed"}, False)])  # fmt: skip
def test_a_gated_step_runs_its_command_only_when_the_decision_says_train(tmp_path, decision, runs):
    marker = tmp_path / "ran"
    command = [sys.executable, str(SOURCE_DIR / "gate.py"), "run"]
    if decision is not None:
        (tmp_path / gate.DECISION_FILE).write_text(json.dumps(decision))
        command += ["--decision", str(tmp_path)]
    finished = subprocess.run([*command, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                              capture_output=True, text=True)  # fmt: skip
    assert finished.returncode == 0 and marker.exists() is runs
    if not runs:
        assert finished.stdout.strip() == "skipped: every signal passed"


def test_a_step_that_is_this_pythons_script_runs_in_the_gates_process_as_that_python_would(tmp_path):
    """The local target forks steps from a warm interpreter: `python SCRIPT.py` runs in the gate's process (so what
    it imported stays imported), with the argv, sys.path[0], __main__ and exit status of `python SCRIPT.py`."""
    step = tmp_path / "step"
    step.mkdir()
    (step / "job.py").write_text(
        "import json, sys\n"
        "json.dump({'argv': sys.argv, 'path0': sys.path[0], 'name': __name__, 'orig': sys.orig_argv},"
        " open(sys.argv[2], 'w'))\n"
        "sys.exit(int(sys.argv[1]))\n")  # fmt: skip
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    python = Path(sys.executable).name
    for code in (0, 3):
        seen = tmp_path / f"seen-{code}.json"
        finished = subprocess.run([sys.executable, str(SOURCE_DIR / "gate.py"), "run", "--", python, "job.py", str(code),
                                   str(seen)], cwd=step, env=environment)  # fmt: skip
        ran = json.loads(seen.read_text())
        assert finished.returncode == code
        assert (ran["argv"], ran["path0"], ran["name"]) == (["job.py", str(code), str(seen)], str(step), "__main__")
        assert ran["orig"][1:3] == [str(SOURCE_DIR / "gate.py"), "run"]  # the gate's interpreter, not a new one
    # the monitor of `decide` too; a traceback is the exit status 1 an interpreter gives it
    (step / "monitor.py").write_text("raise RuntimeError('unreadable input')\n")
    failed = subprocess.run([sys.executable, str(SOURCE_DIR / "gate.py"), "decide", "--signals", str(tmp_path / "s"),
                             "--decision", str(tmp_path / "d"), "--", python, "monitor.py"],
                            cwd=step, env=environment, capture_output=True, text=True)  # fmt: skip
    assert failed.returncode == 2 and "RuntimeError: unreadable input" in failed.stderr
    assert 'File "monitor.py", line 1' in failed.stderr and "runpy" not in failed.stderr  # the script's frames only
    assert "the monitor exited 1 but its" in failed.stderr


# -- Azure: the collector's data assets, the monitors, the rule ----------------------------------------------


def new_data(data_dir: Path) -> None:
    """A new version of bank marketing's data: new job names, so the jobs run again and a new model is registered
    and rolled out in a deployment of its own."""
    path = data_dir / BANK.data.file
    path.write_text(path.read_text().replace("married", "divorced", 1))


def test_each_collection_keeps_one_data_asset_across_rollouts(data_dir):
    """Deployments are renamed on every rollout; the data asset each collection writes to is not."""
    workspace, target = stage(data_dir)
    flow.run(target, [BANK], lambda line: None)
    name = endpoint(BANK, "managed")
    first = {d.name for d in workspace.online_deployments.store.values()}
    new_data(data_dir)
    flow.run(target, [BANK], lambda line: None)
    assert {d.name for d in workspace.online_deployments.store.values()} != first
    collections = {entity.name: entity.path for entity in workspace.data.created if entity.name.startswith(name)}
    assert collections == {f"{name}-{c}": f"{COLLECTOR_ROOT}/bank-marketing/{name}/{c}" for c in ("model_inputs", "model_outputs")}
    sent = [d.data_collector for d in workspace.online_deployments.sent]
    assert len(sent) == 2 and all(c.collections["model_inputs"].data.name == f"{name}-model_inputs" for c in sent)


def test_a_workload_that_collects_nothing_deploys_without_a_data_collector():
    quiet = dataclasses.replace(BANK, monitor=dataclasses.replace(BANK.monitor, collect=False))
    model = RegisteredModel(BANK.model, "3", BANK.metric, 0.9, "run")
    collecting = entities.deployment_entity(BANK, "managed", OUTPUTS, model, {})
    assert collecting.data_collector.collections["model_outputs"].enabled == "true"
    assert entities.deployment_entity(quiet, "managed", OUTPUTS, model, {}).data_collector is None
    assert collecting.name != entities.deployment_entity(quiet, "managed", OUTPUTS, model, {}).name


def test_serverless_spark_monitors_are_refused_in_a_private_stack():
    """concept-network-isolation-configurations: "Serverless Spark computes aren't supported in a custom virtual
    network"; the rule catches an Azure monitor on a private stack, and the stage builds none there."""
    azure_monitor = load_schedule(HOUSING.monitor.schedule)
    assert isinstance(azure_monitor, MonitorSchedule)
    assert azure_monitoring.spark_monitor_problem(OUTPUTS, azure_monitor) is None
    problem = azure_monitoring.spark_monitor_problem(PRIVATE, azure_monitor)
    assert problem and "aren't supported in a custom virtual network" in problem
    built, _ = azure_monitoring.monitor_entity(HOUSING, "managed", PRIVATE, {}, "v1-abc")
    assert isinstance(built, JobSchedule) and azure_monitoring.spark_monitor_problem(PRIVATE, built) is None


def test_schedule_creates_each_endpoints_monitor_once_it_serves_and_updates_it_after_a_rollout(data_dir):
    workspace, target = stage(data_dir)
    lines = []
    done = azure_commands.schedule(target, [BANK], lines.append)  # nothing deployed yet: no monitor to watch it
    assert done == {"bank-marketing-retrain": "created"}
    assert any("no monitor of the managed endpoint yet" in line for line in lines)
    flow.run(target, [BANK], lambda line: None)
    assert azure_commands.schedule(target, [BANK], lines.append) == {
        "bank-marketing-retrain": "unchanged", "bank-marketing-monitor-managed": "created"}  # fmt: skip
    live = workspace.schedules.get("bank-marketing-monitor-managed")
    serving = next(iter(workspace.online_endpoints.get(endpoint(BANK, "managed")).traffic))
    assert isinstance(live, MonitorSchedule) and live.is_enabled  # monitor.environments.dev: enabled
    assert live.create_monitor.monitoring_target.endpoint_deployment_id == f"azureml:{endpoint(BANK, 'managed')}:{serving}"
    assert azure_commands.schedule(target, [BANK], lines.append)["bank-marketing-monitor-managed"] == "unchanged"
    new_data(data_dir)  # a new deployment serves: the monitor follows it
    flow.run(target, [BANK], lambda line: None)
    assert azure_commands.schedule(target, [BANK], lines.append)["bank-marketing-monitor-managed"] == "updated"


def test_in_a_private_stack_the_monitor_is_a_pipeline_that_mails_its_contacts_when_it_fails(data_dir):
    workspace, target = stage(data_dir, outputs=PRIVATE)
    flow.run(target, [BANK], lambda line: None)
    azure_commands.schedule(target, [BANK], lambda line: None)
    body, pipeline = workspace.schedules.stored["bank-marketing-monitor-managed"]
    assert isinstance(pipeline, azure_monitoring.NotifyingPipelineJob)
    step = pipeline.jobs["monitor"]
    assert step.inputs.mode._data == "alert" and step.compute is None  # the pipeline's default: the CPU cluster
    assert pipeline.settings.default_compute == PRIVATE[keys.CPU_CLUSTER]
    # the request Azure gets: the job's notification setting, which azure-ai-ml's entity cannot carry
    sent = json.loads(json.dumps(body.as_dict(), default=str))
    notification = sent["properties"]["action"]["jobDefinition"]["notificationSetting"]
    assert notification == {"emailOn": ["JobFailed"], "emails": ["ml-platform@example.com"]}


# -- the workloads' monitor section -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda d: d["monitor"].update(sampling_rate=1.5), "monitor.sampling_rate: 1.5"),
        (lambda d: d["monitor"].update(keep_days=0), "monitor.keep_days: 0"),
        (lambda d: d["monitor"].update(owner="me"), "monitor.owner: not a monitor key"),
        (lambda d: d["monitor"]["demo"].update(median_house_value={"scale": 2}), "monitor.demo.median_house_value: the target"),
        (lambda d: d["monitor"]["demo"].update(ocean_proximity={"share": 2, "value": "ISLAND"}), "monitor.demo.ocean_proximity.share: 2"),
        (lambda d: d["monitor"]["environments"].update(prod={"cron": "0 25 * * *"}), "monitor.environments.prod.cron: hour '25'"),
        (lambda d: d["retrain"].update(when="sometimes"), "retrain.when: 'sometimes'; allowed: always, drifted"),
    ],
)
def test_a_bad_monitor_section_is_refused_naming_the_key(tmp_path, change, says):
    root = copy_of("housing", tmp_path)
    edit(root / "housing", change)
    with pytest.raises(WorkloadError, match=None) as refused:
        load_workload(root / "housing")
    assert says in str(refused.value)


def without_the_monitor_step(text: str) -> str:
    document = yaml.safe_load(text)
    return yaml.safe_dump({**document, "jobs": {name: step for name, step in document["jobs"].items() if name != "monitor"}})


@pytest.mark.parametrize(
    "file, change, says",
    [
        ("monitor.yml", lambda text: text.replace("categorical: {jensen_shannon_distance: 0.1}", "categorical: {chi_squared_test: 0.05}", 1),
         "data-drift.metric_thresholds.categorical.chi_squared_test: not a categorical metric of data_drift"),
        ("monitor.yml", lambda text: text.replace("target_column: median_house_value", "target_column: price", 1),
         "target_column 'price', but the workload's target is 'median_house_value'"),
        ("monitor.yml", lambda text: text.replace("ml_task: regression", "ml_task: classification"),
         "monitoring_target.ml_task 'classification', but the workload's task is 'regression'"),
        ("retrain.yml", without_the_monitor_step, "retrain.when: drifted, but retrain.yml has no 'monitor' step"),
    ],
    ids=["a metric azure-ai-ml refuses", "another target", "another task", "a gate without its monitor step"],
)  # fmt: skip
def test_a_monitor_schedule_or_gated_pipeline_that_does_not_fit_the_workload_is_refused(tmp_path, file, change, says):
    root = copy_of("housing", tmp_path)
    path = root / "housing" / file
    path.write_text(change(path.read_text()))
    with pytest.raises(WorkloadError) as refused:
        load_workload(root / "housing")
    assert says in str(refused.value)


def test_the_shipped_monitor_schedules_load_as_azure_loads_them_and_judge_the_workloads_task():
    for workload in WORKLOADS.values():
        loaded = load_schedule(workload.monitor.schedule)
        assert loaded.create_monitor.monitoring_target.ml_task == workload.task
        assert {s.type for s in loaded.create_monitor.monitoring_signals.values()} == {"data_drift", "prediction_drift", "data_quality"}
        assert all(s.alert_enabled for s in loaded.create_monitor.monitoring_signals.values())
        assert loaded.create_monitor.alert_notification.emails


# -- the local demonstration ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bank-marketing model registered on the local target, trained on generated data by train.py. Its label mostly follows the call's length, so the model predicts it about as often as it occurs:
    prediction drift (predicted labels against the training rows' labels) then passes on held-out rows, as on the
    real data."""
    data_dir = tmp_path_factory.mktemp("data")
    frame = bank_frame(3000)
    score = frame["duration"] / frame["duration"].std() + np.random.default_rng(1).normal(0, 0.3, len(frame))
    frame["y"] = np.where(score > score.quantile(0.8), "yes", "no")
    frame.to_csv(data_dir / BANK.data.file, index=False, sep=";")
    target = LocalTarget(data_dir, tmp_path_factory.mktemp("work"), workers=1, automl_minutes=0.02)
    target.prepare([BANK], lambda line: None)
    # train.py in this process (tests/test_score.py's helper), its model registered as the flow registers one
    root = trained_root(tmp_path_factory.mktemp("model"), frame, BANK.data.target, BANK.task, BANK.model)
    target.client.create_registered_model(BANK.model)
    target.client.create_model_version(BANK.model, str(root / BANK.model / "1" / "model"), tags={"workload": BANK.name})
    yield target
    target.close()


@pytest.fixture(scope="module")
def lighter_bank(tmp_path_factory):
    """Bank marketing with a retraining pipeline of its gate and LightGBM step only (the shipped pipelines are run
    whole in tests/test_pipeline.py): the same gate and monitor, and training to show that it trains, in less of
    the suite's time."""
    root = copy_of("bank-marketing", tmp_path_factory.mktemp("workloads"))
    pipeline = root / "bank-marketing" / "retrain.yml"
    document = yaml.safe_load(pipeline.read_text())
    document["jobs"] = {step: document["jobs"][step] for step in ("monitor", "lightgbm")}
    document["jobs"]["lightgbm"]["inputs"]["data"] = "${{parent.inputs.data}}"
    document["jobs"]["lightgbm"]["inputs"]["n_estimators"] = 100  # early stopping picks among 100 trees, not 3,000
    document["outputs"] = {}
    pipeline.write_text(yaml.safe_dump(document, sort_keys=False))
    for spec in ("retrain.yml", "monitor.yml"):  # component paths are relative to the workload's folder
        text = (root / "bank-marketing" / spec).read_text().replace("../../jobs/", f"{SOURCE_DIR.parent}/")
        (root / "bank-marketing" / spec).write_text(text)
    return load_workload(root / "bank-marketing")


def test_the_demo_serves_two_windows_monitors_each_and_the_gate_retrains_only_on_the_drifted_one(trained, lighter_bank):
    lines = []
    assert monitoring.demo(trained, lighter_bank, lines.append, {"min_rows": 100}) == 0, "\n".join(lines)
    printed = "\n".join(lines)
    # each window's monitor is its gated pipeline's first step
    runs = (trained.work_dir / "pipelines" / "bank-marketing").glob("*/monitor/outputs/signals/signals.json")
    first, second = sorted((json.loads(path.read_text()) for path in runs), key=lambda signals: signals["window"]["since"])
    # the verdicts are the computed signals': the held-out rows pass, the drifted ones fail on what was drifted
    assert first["signals"]["data_drift"]["passed"] and first["signals"]["prediction_drift"]["passed"]
    failed = {row["feature"] for row in second["signals"]["data_drift"]["features"] if not row["passed"]}
    assert failed == set(BANK.monitor.demo) == {"balance", "contact"}
    assert first["window"]["rows"]["model_inputs"] == second["window"]["rows"]["model_inputs"] == 600
    assert "as expected: the gated pipeline skips window 1" in printed
    assert "as expected: the gated pipeline trains on window 2" in printed and "NOT as expected" not in printed
    trained_again = [path for path in (trained.work_dir / "pipelines" / "bank-marketing").glob("*/lightgbm/outputs/results/model/MLmodel")]
    assert len(trained_again) == 1  # the gated pipeline trained once: on window 2
    # what each served request sent and got back is on disk, in Azure's layout, for either window
    collected = list((trained.collected_dir / "bank-marketing").glob("local-bank-marketing/v1/model_inputs/*/*/*/*/*.jsonl"))
    assert collected and all(json.loads(line)["type"] == "azureml.inference.model_inputs"
                             for path in collected for line in path.read_text().splitlines())  # fmt: skip


def test_the_demo_command_refuses_a_stack(capsys):
    assert cli.main(["monitor", "--stack", "dev", "--demo", "--workload", "bank-marketing"]) == 1
    assert "`monitor` runs on this machine (--local); in Azure the monitors are schedules" in capsys.readouterr().err


def test_the_local_monitor_exits_2_and_names_the_folder_when_nothing_was_collected(trained, tmp_path, capsys):
    code = cli.main(["monitor", "--local", "--workload", "bank-marketing", "--data-dir", str(trained.data_dir),
                     "--work-dir", str(trained.work_dir), "--production", str(tmp_path / "nothing")])  # fmt: skip
    assert code == 2 and "nothing" in capsys.readouterr().out


def test_the_demo_needs_a_workload_that_drifts_something(trained):
    quiet = dataclasses.replace(BANK, monitor=dataclasses.replace(BANK.monitor, demo={}))
    with pytest.raises(FlowError, match="monitor.demo names no column to drift"):
        monitoring.demo(trained, quiet, lambda line: None, {})
