"""The monitor's signals, metrics and thresholds, as Azure ML model monitoring names them, and the reader of a
workload's monitor schedule (CLI v2 schedule YAML, `create_monitor.monitoring_signals`) into them.

One definition for monitor.py (which computes the signals), the workload checks (jobs/monitoring.py) and the
Azure stage, so a threshold means the same on both targets. Standard library and PyYAML only: the stage's
process reads it without the statistics libraries.

    signal -> kind -> metric -> threshold, e.g. {"data_drift": {"numerical": {"normalized_wasserstein_distance": 0.1}}}
"""

from __future__ import annotations

from pathlib import Path

import yaml

SIGNALS = ("data_drift", "prediction_drift", "data_quality")
KINDS = ("numerical", "categorical")
DRIFT_METRICS = {
    "numerical": ("normalized_wasserstein_distance", "jensen_shannon_distance", "population_stability_index",
                  "two_sample_kolmogorov_smirnov_test"),
    "categorical": ("jensen_shannon_distance", "population_stability_index", "pearsons_chi_squared_test"),
}  # fmt: skip
QUALITY_METRICS = ("null_value_rate", "data_type_error_rate", "out_of_bounds_rate")
# the metric names azure-ai-ml's MonitorMetricName spells, per signal and feature kind (reference-yaml-monitor)
METRICS = {
    "data_drift": DRIFT_METRICS,
    "prediction_drift": DRIFT_METRICS,
    "data_quality": {kind: QUALITY_METRICS for kind in KINDS},
}
# p-values: a signal fails when they fall below the threshold; every other metric fails above it (azureml-assets
# model_monitor_evaluate_metrics_threshold/evaluate_metrics_threshold.py, Metric_Value_Should_Greater_Than_Threshold)
P_VALUES = frozenset({"two_sample_kolmogorov_smirnov_test", "pearsons_chi_squared_test"})
# azure-ai-ml's defaults (entities/_monitoring/thresholds.py, `_get_default_thresholds`): the drift signals judge
# numerical features by normalized Wasserstein distance and categorical ones by Jensen-Shannon distance, at 0.1;
# data quality by each rate, at 0.0 above the reference's own rate
DEFAULT_DRIFT = {"numerical": {"normalized_wasserstein_distance": 0.1}, "categorical": {"jensen_shannon_distance": 0.1}}
DEFAULTS = {
    "data_drift": DEFAULT_DRIFT,
    "prediction_drift": DEFAULT_DRIFT,
    "data_quality": {kind: dict.fromkeys(QUALITY_METRICS, 0.0) for kind in KINDS},
}
ALL_FEATURES = "all_features"


class SpecError(ValueError):
    """A monitor schedule that cannot be read as signals; the message names the file and the key."""


def thresholds(signal: str, given: dict | None = None) -> dict[str, dict[str, float]]:
    """The signal's thresholds per kind: those given for a kind replace that kind's defaults."""
    chosen = {kind: dict(metrics) for kind, metrics in DEFAULTS[signal].items()}
    chosen.update({kind: dict(metrics) for kind, metrics in (given or {}).items() if metrics})
    return chosen


def read_signals(path: str | Path) -> dict[str, dict]:
    """A monitor schedule's signals, by type: {signal: {"thresholds": {kind: {metric: value}}, "features": [...]
    or None (all), "types": {feature: kind}}}. SpecError names every key it cannot take."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"{path}: cannot read the monitor schedule: {error}") from None
    section = ((document or {}).get("create_monitor") or {}) if isinstance(document, dict) else {}
    signals = section.get("monitoring_signals") if isinstance(section, dict) else None
    if not isinstance(signals, dict) or not signals:
        raise SpecError(f"{path}: create_monitor.monitoring_signals: a mapping of named signals is required")
    found, problems = {}, []
    for name, signal in signals.items():
        key = f"create_monitor.monitoring_signals.{name}"
        kind = (signal or {}).get("type") if isinstance(signal, dict) else None
        if kind not in SIGNALS:
            problems.append(f"{key}.type: {kind!r}; the monitor computes {', '.join(SIGNALS)}")
            continue
        if kind in found:
            problems.append(f"{key}: a second {kind} signal; one of each type")
            continue
        given = signal.get("metric_thresholds") or {}
        for feature_kind, metrics in given.items():
            if feature_kind not in KINDS or not isinstance(metrics, dict):
                problems.append(f"{key}.metric_thresholds.{feature_kind}: expected numerical or categorical: {{metric: threshold}}")
                continue
            for metric, value in metrics.items():
                if metric not in METRICS[kind][feature_kind]:
                    problems.append(f"{key}.metric_thresholds.{feature_kind}.{metric}: not a {feature_kind} metric of "
                                    f"{kind}; known: {', '.join(METRICS[kind][feature_kind])}")  # fmt: skip
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    problems.append(f"{key}.metric_thresholds.{feature_kind}.{metric}: {value!r} is not a number")
        features = signal.get("features", ALL_FEATURES)
        if features != ALL_FEATURES and not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            problems.append(f"{key}.features: {features!r}; a list of column names, or {ALL_FEATURES} "
                            "(top_n_feature_importance needs feature importances, which the monitor does not compute)")  # fmt: skip
        types = signal.get("feature_type_override") or {}
        if not isinstance(types, dict) or not set(types.values()) <= set(KINDS):
            problems.append(f"{key}.feature_type_override: {types!r}; a mapping of column name to numerical or categorical")
        found[kind] = {
            "thresholds": thresholds(kind, {k: v for k, v in given.items() if k in KINDS and isinstance(v, dict)}),
            "features": None if features == ALL_FEATURES else features,
            "types": types if isinstance(types, dict) else {},
        }
    if problems:
        raise SpecError(f"{path}:\n  " + "\n  ".join(problems))
    return found
