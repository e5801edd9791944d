"""An Azure ML AutoML job spec (CLI v2 YAML, `type: automl`) as a local command: `jobs/src/automl.py`, which
runs the search with FLAML. The local target calls `command_for` and reports its notes, so a setting that
does not apply on this machine is said, not silently dropped.

What maps (spec key -> automl.py option -> FLAML):

    task                                  --task                    task
    primary_metric                        --primary-metric          metric (automl_mapping.REGRESSION_METRICS, ...)
    target_column_name                    --target                  the label column
    limits.timeout_minutes                --timeout-minutes         time_budget (capped by max_minutes)
    limits.max_trials                     --max-trials              max_iter
    limits.trial_timeout_minutes          --trial-timeout-minutes   train_time_limit
    limits.enable_early_termination       --early-stop              early_stop
    limits.max_cores_per_trial            --n-jobs                  n_jobs
    n_cross_validations                   --n-cross-validations     eval_method cv, n_splits
    validation_data_size                  --validation-size         eval_method holdout, split_ratio
    training.allowed_training_algorithms  --allowed-algorithms      estimator_list (automl_mapping.ALGORITHMS)
    training.blocked_training_algorithms  --blocked-algorithms      estimator_list, less these
    training.enable_stack_ensemble        --enable-stack-ensemble   ensemble (a stack, as FLAML builds it)
    featurization.mode                    --featurization           auto: tabular.preprocessor; off: raw columns
"""

from __future__ import annotations

import json
from pathlib import Path

from jobs.flow import source_module

# Azure ML's defaults where a spec leaves a setting out (azure-ai-ml AutoML job and limit settings)
AZURE_TIMEOUT_MINUTES = 6 * 24 * 60  # an AutoML experiment times out after 6 days
AZURE_DEFAULT_METRICS = {"classification": "accuracy", "regression": "normalized_root_mean_squared_error"}
AZURE_STACK_ENSEMBLE_DEFAULT = True

# keys that describe or place the job rather than shape the model: nothing to map, nothing to report
METADATA = {"$schema", "type", "name", "display_name", "experiment_name", "description", "tags", "properties"}
# keys that command_for maps (or reads: the data inputs are resolved by the local target)
MAPPED = {
    "task", "primary_metric", "target_column_name", "training_data", "test_data",
    "n_cross_validations", "validation_data_size", "limits", "training", "featurization",
}  # fmt: skip
# top-level keys that do not apply locally, and why
NOT_MAPPED = {
    "compute": "runs on this machine",
    "resources": "runs on this machine",
    "queue_settings": "runs on this machine",
    "identity": "runs as the current user",
    "outputs": "the model and metrics go to the local run's output folder",
    "validation_data": "FLAML validates on folds or a holdout of the training rows instead",
    "cv_split_column_names": "FLAML makes its own folds",
    "weight_column_name": "sample weights are not passed to FLAML",
    "positive_label": "the positive class is the second in sorted order, as in train.py",
    "log_verbosity": "FLAML logs at its own verbosity",
    "log_files": "FLAML writes flaml.log in the output folder",
}
LIMITS = {"timeout_minutes", "max_trials", "trial_timeout_minutes", "enable_early_termination", "max_cores_per_trial"}
LIMITS_NOT_MAPPED = {
    "max_concurrent_trials": "trials run one at a time locally (FLAML runs concurrent trials only on Ray or Spark)",
    "max_nodes": "runs on this machine",
    "exit_score": "FLAML has no target score to stop at",
}
TRAINING = {"allowed_training_algorithms", "blocked_training_algorithms", "enable_stack_ensemble"}
TRAINING_NOT_MAPPED = {
    "enable_vote_ensemble": "FLAML builds a stack ensemble only, no voting ensemble",
    "enable_model_explainability": "no model explanations are computed locally",
    "enable_onnx_compatible_models": "the model is saved as an MLflow scikit-learn model only",
    "stack_ensemble_settings": "the stack is FLAML's (the best estimator as final estimator, with passthrough)",
    "ensemble_model_download_timeout": "no ensemble models are downloaded locally",
    "enable_dnn_training": "FLAML's tabular estimators only",
    "training_mode": "FLAML's own training",
}
FEATURIZATION_NOT_MAPPED = {
    "blocked_transformers": "the local featurization is tabular.preprocessor's, whole",
    "column_name_and_types": "column types are read from the CSV",
    "transformer_params": "the local featurization is tabular.preprocessor's, with its own settings",
    "enable_dnn_featurization": "no DNN featurization locally",
}


class SpecError(ValueError):
    """The spec cannot run locally; the message names the file and the key."""


def automl_mapping():
    """jobs/src/automl_mapping.py: automl.py's mapping tables and checks (standard library only, so the flow's
    process does not load what automl.py trains with)."""
    return source_module("automl_mapping")


def command_for(
    spec: dict, spec_path: Path, data_csv: Path, output: Path, max_minutes: float | None
) -> tuple[list[str], list[str]]:
    """The automl.py command for an AutoML spec (run from jobs/src), and a note for each setting of the spec
    that does not apply locally. SpecError (naming the file and the key) for what cannot run at all."""
    automl = automl_mapping()

    def fail(key: str, message: str) -> SpecError:
        return SpecError(f"{spec_path}: {key}: {message}")

    notes: list[str] = []
    if spec.get("type") != "automl":
        raise fail("type", f"expected automl, not {spec.get('type')!r}")
    task = spec.get("task")
    if task not in ("regression", "classification"):
        raise fail("task", f"{task!r} cannot run locally; the local AutoML runs regression and classification")
    target = spec.get("target_column_name")
    if not target or not isinstance(target, str):
        raise fail("target_column_name", "missing: the column to predict")
    metric = spec.get("primary_metric")
    if metric is None:
        metric = AZURE_DEFAULT_METRICS[task]
        notes.append(f"primary_metric: not set; Azure's default for {task}, {metric}")
    try:
        # the binary name; a multiclass target is checked by automl.py once it has read the data
        automl.flaml_metric(str(metric), task, 2)
    except ValueError as error:
        raise fail("primary_metric", str(error)) from None

    limits = _section(spec, "limits", fail)
    timeout = limits.get("timeout_minutes")
    if timeout is None:
        timeout = AZURE_TIMEOUT_MINUTES
    timeout = _positive(timeout, "limits.timeout_minutes", fail)
    if max_minutes is not None and max_minutes < timeout:
        notes.append(f"limits.timeout_minutes: {timeout:g} capped at {max_minutes:g} locally")
        timeout = float(max_minutes)
    command = ["python", "automl.py", "--data", str(data_csv), "--target", target, "--task", task,
               "--primary-metric", str(metric), "--timeout-minutes", f"{timeout:g}", "--output", str(output)]  # fmt: skip
    if limits.get("max_trials") is not None:
        command += ["--max-trials", str(int(_positive(limits["max_trials"], "limits.max_trials", fail)))]
    if limits.get("trial_timeout_minutes") is not None:
        minutes = _positive(limits["trial_timeout_minutes"], "limits.trial_timeout_minutes", fail)
        command += ["--trial-timeout-minutes", f"{minutes:g}"]
    if limits.get("enable_early_termination") is not None:
        command += ["--early-stop", _boolean(limits["enable_early_termination"], "limits.enable_early_termination", fail)]
    cores = limits.get("max_cores_per_trial")
    if cores is not None:
        if not isinstance(cores, int) or isinstance(cores, bool) or (cores < 1 and cores != -1):
            raise fail("limits.max_cores_per_trial", f"expected a positive whole number or -1, not {cores!r}")
        command += ["--n-jobs", str(cores)]
    notes += _not_mapped(limits, LIMITS, LIMITS_NOT_MAPPED, "limits.")

    folds = spec.get("n_cross_validations")
    if folds is not None and str(folds).lower() != "auto":
        if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
            raise fail("n_cross_validations", f"expected 'auto' or a whole number of at least 2, not {folds!r}")
        command += ["--n-cross-validations", str(folds)]
    size = spec.get("validation_data_size")
    if size is not None:
        if not isinstance(size, (int, float)) or isinstance(size, bool) or not 0 < size < 1:
            raise fail("validation_data_size", f"expected a fraction between 0 and 1, not {size!r}")
        if "--n-cross-validations" in command:
            raise fail("validation_data_size", "set together with n_cross_validations; Azure takes one or the other")
        command += ["--validation-size", f"{size:g}"]

    training = _section(spec, "training", fail)
    for key, option in (("allowed_training_algorithms", "--allowed-algorithms"),
                        ("blocked_training_algorithms", "--blocked-algorithms")):  # fmt: skip
        names = training.get(key)
        if names is None:
            continue
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise fail(f"training.{key}", f"expected a list of algorithm names, not {names!r}")
        if names:
            command += [option, ",".join(names)]
    try:
        automl.estimator_list(task, _listed(training.get("allowed_training_algorithms")),
                              _listed(training.get("blocked_training_algorithms")))  # fmt: skip
    except ValueError as error:
        blocked = str(error).startswith("blocked")
        key = "blocked_training_algorithms" if blocked else "allowed_training_algorithms"
        raise fail(f"training.{key}", str(error)) from None
    stack = training.get("enable_stack_ensemble")
    if stack is None:
        stack = AZURE_STACK_ENSEMBLE_DEFAULT
        notes.append("training.enable_stack_ensemble: not set; Azure's default (true) applies, so the stack is built")
    command += ["--enable-stack-ensemble", _boolean(stack, "training.enable_stack_ensemble", fail)]
    notes += _not_mapped(training, TRAINING, TRAINING_NOT_MAPPED, "training.")
    if training.get("enable_vote_ensemble") is None:
        notes.append("training.enable_vote_ensemble: not set; Azure's default (true) would add a voting ensemble, "
                     "which FLAML does not build")  # fmt: skip

    featurization = _section(spec, "featurization", fail)
    mode = str(featurization.get("mode", "auto")).lower()
    if mode not in ("auto", "off", "custom"):
        raise fail("featurization.mode", f"expected auto, off or custom, not {featurization.get('mode')!r}")
    if mode == "custom":
        notes.append("featurization.mode: custom runs as auto (tabular.preprocessor); its settings below are not applied")
    command += ["--featurization", "off" if mode == "off" else "auto"]
    notes += _not_mapped(featurization, {"mode"}, FEATURIZATION_NOT_MAPPED, "featurization.")

    if spec.get("test_data") is not None:
        notes.append("test_data: not read; the held-out rows of tabular.split's seeded split are the test rows "
                     "(the same rows as the test MLTable)")  # fmt: skip
    for key in spec:
        if key in METADATA or key in MAPPED:
            continue
        why = NOT_MAPPED.get(key, "unknown to the local AutoML")
        notes.append(f"{key}: not applied locally: {why}")
    return command, notes


def _section(spec: dict, key: str, fail) -> dict:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, not {value!r}")
    return value


def _not_mapped(section: dict, mapped: set, known: dict, prefix: str) -> list[str]:
    notes = []
    for key, value in section.items():
        if key in mapped:
            continue
        why = known.get(key, "unknown to the local AutoML")
        notes.append(f"{prefix}{key}: {json.dumps(value, default=str)} not applied locally: {why}")
    return notes


def _positive(value, key: str, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise fail(key, f"expected a positive number, not {value!r}")
    return float(value)


def _boolean(value, key: str, fail) -> str:
    if not isinstance(value, bool):
        raise fail(key, f"expected true or false, not {value!r}")
    return "true" if value else "false"


def _listed(names) -> list[str] | None:
    if names is None:
        return None
    return [names] if isinstance(names, str) else list(names)
