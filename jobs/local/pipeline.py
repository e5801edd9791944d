"""A workload's retraining pipeline (Azure ML CLI v2 `type: pipeline`) run on this machine.

azure-ai-ml has no local pipeline runner (azure-sdk-for-python #37867), so this reads the same pipeline YAML
and its command components as Azure ML does:
- a step's inputs are its node's bindings: literals, `${{parent.inputs.NAME}}` (a data asset becomes the
  workload's data file, as for the command jobs) and `${{parent.jobs.STEP.outputs.NAME}}` (that step's
  output folder, which also orders the steps); an input the node leaves unbound takes the component's
  default; an optional one with neither drops its `$[[...]]` part of the command, as Azure ML does;
- each output is a folder (a file for `uri_file`) under the pipeline run's folder;
- steps run in dependency order as local processes, those with nothing between them side by side;
- one MLflow parent run, a child run per step (each step's script resumes it through MLFLOW_RUN_ID).
A failing step stops the pipeline: its name and log tail are reported, and the steps after it do not run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobs.flow import FlowError, Report, in_parallel
from jobs.local.server import tail
from jobs.local.specs import render
from jobs.workloads import Workload, read_mapping

_PARENT = re.compile(r"^\$\{\{\s*parent\.(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}$")
_STEP_OUTPUT = re.compile(r"^\$\{\{\s*parent\.jobs\.([A-Za-z0-9_]+)\.outputs\.([A-Za-z0-9_]+)\s*\}\}$")
PATH_TYPES = ("uri_file", "uri_folder", "mlflow_model", "custom_model", "mltable")


@dataclass
class Step:
    name: str
    component: dict
    component_file: Path
    code: Path
    bindings: dict  # input name -> the node's value (a literal or a binding)
    outputs: dict  # output name -> the node's binding to a pipeline output, if any
    after: set[str] = field(default_factory=set)


@dataclass
class StepResult:
    name: str
    status: str  # Completed, Failed, NotStarted
    run_id: str | None = None
    seconds: float = 0.0
    log: Path | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def last_line(self) -> str:
        lines = tail(self.log, 1).strip() if self.log else ""
        return lines if not lines.startswith("(no log") else ""


@dataclass
class PipelineRun:
    workload: str
    run_id: str
    folder: Path
    steps: list[StepResult]
    outputs: dict[str, str]


def _load(path: Path, what: str) -> dict:
    return read_mapping(path, f"{what} not found: {path}")


def load_steps(pipeline_file: Path, spec: dict | None = None) -> tuple[dict, dict[str, Step]]:
    """The pipeline spec (the file's, unless given) and its steps, each with its component and the steps it waits
    for; a binding to a step, an input or an output that does not exist is an error naming the step and the key."""
    spec = spec if spec is not None else _load(pipeline_file, "pipeline spec")
    if spec.get("type") != "pipeline":
        raise FlowError(f"{pipeline_file}: type {spec.get('type')!r}, not pipeline")
    nodes = spec.get("jobs") or {}
    if not nodes:
        raise FlowError(f"{pipeline_file}: jobs: no steps")
    steps, problems = {}, []
    for name, node in nodes.items():
        where = f"{pipeline_file}: jobs.{name}"
        if (node or {}).get("type", "command") != "command" or not isinstance(node.get("component"), str):
            problems.append(f"{where}: only command steps with a component file run locally")
            continue
        component_file = (pipeline_file.parent / node["component"]).resolve()
        component = _load(component_file, f"{where}: component")
        declared_inputs, declared_outputs = component.get("inputs") or {}, component.get("outputs") or {}
        bindings, outputs = dict(node.get("inputs") or {}), dict(node.get("outputs") or {})
        for key in sorted(set(bindings) - set(declared_inputs)):
            problems.append(f"{where}.inputs.{key}: the component {component_file.name} has no such input")
        for key in sorted(set(outputs) - set(declared_outputs)):
            problems.append(f"{where}.outputs.{key}: the component {component_file.name} has no such output")
        code = (component_file.parent / component.get("code", ".")).resolve()
        steps[name] = Step(name, component, component_file, code, bindings, outputs)
    for step in steps.values():
        for key, value in step.bindings.items():
            match = _STEP_OUTPUT.match(str(value))
            if not match:
                continue
            source, output = match.groups()
            if source not in nodes:
                problems.append(f"{pipeline_file}: jobs.{step.name}.inputs.{key}: no step {source!r}")
            elif source in steps and output not in (steps[source].component.get("outputs") or {}):
                problems.append(f"{pipeline_file}: jobs.{step.name}.inputs.{key}: step {source} has no output {output!r}")
            else:
                step.after.add(source)
    if problems:
        raise FlowError("\n".join(problems))
    return spec, steps


def waves(steps: dict[str, Step], pipeline_file: Path) -> list[list[str]]:
    """The steps in dependency order: each wave's steps wait only for earlier waves."""
    done: set[str] = set()
    ordered = []
    while len(done) < len(steps):
        ready = [name for name, step in steps.items() if name not in done and step.after <= done]
        if not ready:
            raise FlowError(f"{pipeline_file}: the steps {', '.join(sorted(set(steps) - done))} wait for each other (a cycle)")
        ordered.append(ready)
        done.update(ready)
    return ordered


class LocalPipelineRunner:
    """Runs a workload's retraining pipeline with the local target's data, MLflow store and processes."""

    def __init__(self, target):
        self.target = target  # a jobs.local.target.LocalTarget, prepared for the workload

    def run(self, workload: Workload, report: Report, overrides: dict[str, str] | None = None,
            gated: bool | None = None) -> PipelineRun:  # fmt: skip
        """Run the pipeline; `overrides` replace pipeline inputs by name (as `az ml job create --set
        inputs.NAME=VALUE` does); `gated` turns its drift gate on or off (default: the workload's retrain.when)."""
        if workload.retrain is None:
            raise FlowError(f"workload {workload.name} declares no retraining pipeline ({workload.file}: retrain)")
        pipeline_file = workload.retrain.pipeline
        spec, steps = load_steps(pipeline_file, workload.retrain.document(gated))
        order = waves(steps, pipeline_file)
        parent_inputs = self._parent_inputs(spec, pipeline_file)
        unknown = sorted(set(overrides or {}) - set(parent_inputs))
        if unknown:
            raise FlowError(f"{pipeline_file}: no pipeline input {', '.join(unknown)}; its inputs: {', '.join(parent_inputs)}")
        parent_inputs.update({name: str(value) for name, value in (overrides or {}).items()})
        experiment = spec.get("experiment_name", f"{workload.name}-retrain")
        parent = self.target._start_run(experiment, spec.get("display_name", pipeline_file.stem),
                                        {"workload": workload.name, "pipeline": str(pipeline_file)})  # fmt: skip
        folder = self.target.work_dir / "pipelines" / workload.name / parent
        report(f"pipeline {pipeline_file.name} as MLflow run {parent}: {' -> '.join(' + '.join(wave) for wave in order)}")
        results: dict[str, StepResult] = {name: StepResult(name, "NotStarted") for name in steps}
        pipeline_outputs: dict[str, str] = {}
        failed: StepResult | None = None
        for wave in order:
            in_parallel([lambda s=steps[name]: self._run_step(s, experiment, parent, folder, parent_inputs, results, report)
                         for name in wave])  # fmt: skip
            failed = next((results[name] for name in wave if results[name].status == "Failed"), None)
            if failed:
                break
            for name in wave:
                for output, binding in steps[name].outputs.items():
                    match = _PARENT.match(str(binding))
                    if match and match.group(1) == "outputs":
                        pipeline_outputs[match.group(2)] = results[name].outputs[output]
        self.target.client.set_terminated(parent, "FAILED" if failed else "FINISHED")
        run = PipelineRun(workload.name, parent, folder, [results[name] for wave in order for name in wave], pipeline_outputs)
        if failed:
            skipped = [result.name for result in run.steps if result.status == "NotStarted"]
            raise PipelineFailed(
                f"pipeline {pipeline_file} (MLflow run {parent}): step {failed.name} failed (log: {failed.log})\n"
                f"{tail(failed.log) if failed.log else ''}\nnot run: {', '.join(skipped) or 'none'}",
                run,
            )
        return run

    def _parent_inputs(self, spec: dict, pipeline_file: Path) -> dict[str, str]:
        """The pipeline's inputs as local values: a data asset is the workload's data file."""
        values = {}
        for name, value in (spec.get("inputs") or {}).items():
            if isinstance(value, dict):
                try:
                    values[name] = str(self.target._inputs({"inputs": {name: value}}, pipeline_file.parent)[name])
                except FlowError as error:
                    raise FlowError(f"{pipeline_file}: inputs.{name}: {error}") from None
            else:
                values[name] = str(value)
        return values

    def _step_values(self, step: Step, parent_inputs: dict, results: dict[str, StepResult]) -> dict[str, str]:
        """The step's input values: its bindings resolved, the component's defaults for the rest; an optional
        input with neither is left out."""
        values = {}
        for name, declared in (step.component.get("inputs") or {}).items():
            declared = declared if isinstance(declared, dict) else {"default": declared}
            if name in step.bindings:
                bound = str(step.bindings[name])
                parent, output = _PARENT.match(bound), _STEP_OUTPUT.match(bound)
                if parent and parent.group(1) == "inputs":
                    if parent.group(2) not in parent_inputs:
                        raise FlowError(f"step {step.name}: input {name} binds parent.inputs.{parent.group(2)}, which the pipeline does not define")
                    values[name] = parent_inputs[parent.group(2)]
                elif output:
                    values[name] = results[output.group(1)].outputs[output.group(2)]
                else:
                    values[name] = bound
            elif "default" in declared:
                values[name] = str(declared["default"])
            elif not declared.get("optional"):
                raise FlowError(f"step {step.name}: input {name} is required by {step.component_file.name} and not bound")
        return values

    def _run_step(self, step: Step, experiment: str, parent: str, folder: Path, parent_inputs: dict,
                  results: dict[str, StepResult], report: Report) -> None:  # fmt: skip
        result = results[step.name]
        result.run_id = self.target._start_run(experiment, step.name, {"mlflow.parentRunId": parent, "step": step.name})
        run_dir = folder / step.name
        for name, declared in (step.component.get("outputs") or {}).items():
            path = run_dir / "outputs" / name
            (path.parent if (declared or {}).get("type") == "uri_file" else path).mkdir(parents=True, exist_ok=True)
            result.outputs[name] = str(path)
        command = render(step.component["command"], {"inputs": self._step_values(step, parent_inputs, results), "outputs": result.outputs})
        report(f"{step.name}: running as MLflow run {result.run_id} (log: {run_dir / 'user_logs' / 'std_log.txt'})")
        started = time.monotonic()
        code, result.log = self.target._execute(command, step.code, result.run_id, run_dir)
        result.seconds = time.monotonic() - started
        result.status = "Completed" if code == 0 else "Failed"
        self.target.client.set_terminated(result.run_id, "FINISHED" if code == 0 else "FAILED")
        report(f"{step.name}: {result.status.lower()} in {result.seconds:.1f}s" + (f" (exit code {code})" if code else "")
               + (f": {result.last_line()}" if code == 0 and result.last_line() else ""))  # fmt: skip


class PipelineFailed(FlowError):
    """A step failed; the message names it with its log tail, and `run` holds what did run."""

    def __init__(self, message: str, run: PipelineRun):
        super().__init__(message)
        self.run = run


def summary(run: PipelineRun) -> str:
    rows = [("step", "status", "seconds", "MLflow run", "says")]
    rows += [(s.name, s.status, f"{s.seconds:.1f}", s.run_id or "-", s.last_line()) for s in run.steps]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines += [f"output {name}: {path}" for name, path in run.outputs.items()]
    return f"{run.workload}: pipeline run {run.run_id} ({run.folder})\n" + "\n".join(lines)
