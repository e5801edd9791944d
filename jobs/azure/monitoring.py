"""The monitor of each online endpoint a workload serves on, in Azure: Azure ML model monitoring where it can run,
else the same signals computed by monitor.py in a scheduled pipeline on the CPU cluster.

Azure's monitor runs on serverless Spark, and "Serverless Spark computes aren't supported in a custom virtual
network. Workspace managed virtual network supports Serverless Spark because Azure Synapse only uses managed
virtual network set-up" (learn.microsoft.com/azure/machine-learning/concept-network-isolation-configurations).
A private stack puts the workspace in its own VNet (Kubernetes compute is not supported in a managed network), so
there the monitor is the workload's monitor component (jobs/specs/components/monitor.yml) in a one-step pipeline:
a failed signal fails the job, and the job's notification setting mails the monitor's contacts. A schedule
creates only pipeline jobs unless private preview features are on (azure-ai-ml JobSchedule._to_rest_object).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from azure.ai.ml import Input, load_component
from azure.ai.ml._restclient.arm_ml_service.models import NotificationSetting
from azure.ai.ml.entities import CronTrigger, JobSchedule, MonitorSchedule, PipelineJob
from azure.ai.ml.entities._load_functions import load_schedule

from infra import outputs as keys
from jobs.azure.assets import Asset, digest_files, digest_text
from jobs.azure.entities import collected_asset, collected_path, endpoint_name, pin
from jobs.flow import SPECS_DIR, FlowError
from jobs.workloads import Workload, load_yaml

MONITOR_COMPONENT = SPECS_DIR / "components" / "monitor.yml"
SPARK_UNSUPPORTED = (
    "Azure's model monitor runs on serverless Spark, which a workspace in its own VNet cannot use: \"Serverless "
    "Spark computes aren't supported in a custom virtual network\" (concept-network-isolation-configurations)"
)
# the collection each signal's production data is (reference-yaml-monitor: data_context)
PRODUCTION_COLLECTION = {"data_drift": "model_inputs", "prediction_drift": "model_outputs", "data_quality": "model_inputs"}


def spark_monitor_problem(outputs: Mapping[str, str | None], schedule) -> str | None:
    """Why Azure cannot run this schedule on this stack, or None: a monitor (create_monitor) needs serverless
    Spark, which a private stack's own VNet does not support."""
    if isinstance(schedule, MonitorSchedule) and outputs[keys.NETWORK_ISOLATION] == "private":
        return f"schedule {schedule.name}: {SPARK_UNSUPPORTED}"
    return None


class NotifyingPipelineJob(PipelineJob):
    """A pipeline job that mails `emails` when it fails. azure-ai-ml 1.35.2's job entities carry no notification
    setting, while the REST API's job does (JobBase.notificationSetting: emails, emailOn JobFailed, ...), so it is
    set on the request the SDK builds."""

    def __init__(self, *, emails: list[str], **kwargs):
        super().__init__(**kwargs)
        self.emails = list(emails)

    def _to_rest_object(self):
        rest = super()._to_rest_object()
        rest.properties.notification_setting = NotificationSetting(email_on=["JobFailed"], emails=self.emails)
        return rest

    def _to_dict(self) -> dict:
        return {**super()._to_dict(), "notification_setting": {"email_on": ["JobFailed"], "emails": self.emails}}


def _signal_window(document: dict) -> str:
    """The production lookback the schedule's signals use (data_window.lookback_window_size); one for all."""
    signals = document["create_monitor"]["monitoring_signals"].values()
    windows = {((signal.get("production_data") or {}).get("data_window") or {}).get("lookback_window_size") for signal in signals}
    windows.discard(None)
    if len(windows) > 1:
        raise FlowError(f"the monitor's signals look back over different windows ({', '.join(sorted(windows))}): "
                        "monitor.py judges one window")  # fmt: skip
    return windows.pop() if windows else "P7D"


def monitor_entity(
    workload: Workload, kind: str, outputs: Mapping[str, str | None], assets: Mapping[str, Asset], deployment: str
) -> tuple[MonitorSchedule | JobSchedule, str]:
    """The monitor of the workload's `kind` endpoint for the stack's environment (on or off, its cron from
    workload.yml's monitor.environments), watching `deployment`; and the digest of everything it holds, which the
    stage compares with the live schedule's to leave an unchanged one alone."""
    spec = workload.monitor.schedule
    document = load_yaml(spec.read_text())
    environment = outputs[keys.ENVIRONMENT]
    settings = workload.monitor.settings(environment)
    endpoint = endpoint_name(workload, kind, outputs)
    name = f"{document['name']}-{kind}"
    trigger = CronTrigger(expression=settings["cron"], time_zone=(document.get("trigger") or {}).get("time_zone", "UTC"))
    reference = pin(f"azureml:{workload.name}-mltable@latest", assets)
    digest = digest_text(spec.read_text(), name, endpoint, deployment, reference, settings["cron"], str(settings["enabled"]),
                         outputs[keys.NETWORK_ISOLATION], digest_files([MONITOR_COMPONENT]))[:12]  # fmt: skip
    common = dict(name=name, display_name=document.get("display_name"), trigger=trigger, is_enabled=settings["enabled"],
                  tags={**(document.get("tags") or {}), "workload": workload.name, "endpoint": endpoint,
                        "environment": environment, "digest": digest})  # fmt: skip
    if outputs[keys.NETWORK_ISOLATION] == "private":
        pipeline = _monitor_pipeline(workload, name, document, outputs, assets, endpoint)
        schedule = JobSchedule(description=pipeline.description, create_job=pipeline, **common)
    else:
        definition = load_schedule(spec).create_monitor
        definition.monitoring_target.endpoint_deployment_id = f"azureml:{endpoint}:{deployment}"
        for signal in definition.monitoring_signals.values():
            collection = PRODUCTION_COLLECTION[signal.type]
            signal.production_data.input_data.path = f"azureml:{collected_asset(endpoint, collection)}:1"
            signal.reference_data.input_data.path = reference
        schedule = MonitorSchedule(description=document.get("description"), create_monitor=definition, **common)
    if problem := spark_monitor_problem(outputs, schedule):
        raise FlowError(problem)
    return schedule, digest


def _monitor_pipeline(workload: Workload, name: str, document: dict, outputs: Mapping[str, str | None],
                      assets: Mapping[str, Asset], endpoint: str) -> NotifyingPipelineJob:  # fmt: skip
    """The monitor where Azure's cannot run: the monitor component over the endpoint's collected data, against the
    workload's training rows, with the schedule's signals and window, on the CPU cluster; drift fails the job."""
    component = load_component(MONITOR_COMPONENT)
    component.environment = pin(str(component.environment), assets)
    step = component(
        reference=Input(type="uri_file", path=pin(f"azureml:{workload.name}@latest", assets)),
        production=Input(type="uri_folder", path=collected_path(workload, endpoint) + "/"),
        spec=Input(type="uri_file", path=str(Path(workload.monitor.schedule).resolve())),
        target=workload.data.target,
        task=workload.task,
        since=_signal_window(document),
        mode="alert",
    )  # fmt: skip
    emails = ((document["create_monitor"].get("alert_notification") or {}).get("emails")) or []
    pipeline = NotifyingPipelineJob(
        emails=emails, jobs={"monitor": step}, display_name=name, experiment_name=document["name"],
        description=f"{document.get('description', name)} (monitor.py on the CPU cluster: {SPARK_UNSUPPORTED})",
    )  # fmt: skip
    pipeline.settings.default_compute = outputs[keys.CPU_CLUSTER]
    return pipeline
