"""What the scoring scripts share (score.py online, batch_score.py in batch): the model found under
AZUREML_MODEL_DIR, its input columns from the MLflow signature, the checks on a request's records, the
Scorer that predicts, on a fast path proven exact for the models train.py saves, and (online) the data
collection of the model's inputs and outputs.

Not named tabular.py: each model carries its own copy of that module in its `code_paths`.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

# larger batches belong in a batch endpoint; the limit keeps one request from starving the workers
MAX_ROWS = int(os.environ.get("SCORE_MAX_ROWS", "5000"))

# under the inference server's logger, which prints it; batch scoring's driver takes the root logger's records
log = logging.getLogger("azmlinfsrv.score")

NUMBER_TYPES = frozenset({int, float, type(None)})  # bool is not a number here: type(True) is bool
STRING_TYPES = frozenset({str, type(None)})
BOOLEAN_TYPES = frozenset({bool, type(None)})
# MLflow signature column type -> (accepted JSON value types, what the error message says, numpy dtype)
KINDS = {
    "double": (NUMBER_TYPES, "a number or null", float),
    "float": (NUMBER_TYPES, "a number or null", float),
    "long": (NUMBER_TYPES, "a number or null", float),
    "integer": (NUMBER_TYPES, "a number or null", float),
    "string": (STRING_TYPES, "a string or null", object),
    "boolean": (BOOLEAN_TYPES, "true, false or null", object),
}


class BadRequest(ValueError):
    """The request is well-formed JSON but not valid input for the model."""


def find_model_folder(root: str | Path) -> Path:
    """The folder holding `MLmodel` under AZUREML_MODEL_DIR (Azure nests it as <name>/<version>/<path>)."""
    root = Path(root)
    found = sorted(root.rglob("MLmodel"), key=lambda path: len(path.parts))
    if not found:
        raise FileNotFoundError(f"no MLflow model (an MLmodel file) under AZUREML_MODEL_DIR={root}")
    return found[0].parent


class Schema:
    """The request columns from the model's signature, with precomputed checks for the hot path."""

    def __init__(self, model_folder: Path):
        if _skops_serialized(model_folder):
            _import_skops_without_torch()  # before MLflow: its docstring says why
        from mlflow.models import Model

        metadata = Model.load(str(model_folder))
        if metadata.signature is None:
            raise ValueError(f"the model in {model_folder} has no signature, so its input columns are unknown")
        inputs = metadata.signature.inputs
        self.columns: list[str] = inputs.input_names()
        types = [str(getattr(t, "name", t)).lower() for t in inputs.input_types()]
        unsupported = [f"{c} ({t})" for c, t in zip(self.columns, types) if t not in KINDS]
        if unsupported:
            raise ValueError(f"the model's signature has column types this script cannot take: {unsupported}")
        self.kinds = dict(zip(self.columns, (KINDS[t] for t in types)))
        self.column_set = frozenset(self.columns)
        self.example = self._example(metadata.load_input_example(str(model_folder)))
        # what the model answers: numbers (a regressor), or labels (a classifier: its signature's output is
        # its labels, and its metadata names the classes, the positive one second)
        saved = metadata.metadata or {}
        outputs = metadata.signature.outputs
        # a string column, or (as infer_signature writes a classifier's predictions) a tensor of text or objects
        labels = outputs is not None and any(
            str(getattr(t, "name", t)).lower() == "string" or getattr(t, "kind", "") in ("O", "U", "S")
            for t in outputs.input_types()
        )
        self.classes: list | None = list(saved["classes"]) if saved.get("classes") else None
        self.classifier = saved.get("task") == "classification" or labels or self.classes is not None
        # the column the model predicts (tabular.model_metadata); models saved before it was written have none
        self.target: str | None = saved.get("target") or None

    def answer_example(self) -> list:
        """One answer, for the Swagger."""
        if not self.classifier:
            return [0.0]
        classes = self.classes or ["a class", "another class"]
        if len(classes) == 2:
            return [{"label": classes[1], "probability": 0.87}]
        return [{"label": classes[0], "probabilities": {name: round(1 / len(classes), 2) for name in classes}}]

    def _example(self, frame) -> dict:
        """The first input-example row with every value present, as JSON values of the column's kind."""
        if frame is None or len(frame) == 0:
            return {c: (0.0 if kind[2] is float else "") for c, kind in self.kinds.items()}
        complete = frame.dropna()
        row = (complete if len(complete) else frame).iloc[0]
        return {c: (float(row[c]) if self.kinds[c][2] is float else row[c]) for c in self.columns}

    def to_columns(self, data) -> dict[str, np.ndarray]:
        """Check the records and turn them into one numpy array per column (null -> NaN / None)."""
        if not isinstance(data, list):
            raise BadRequest(f"'data' must be a list of records (objects mapping column to value), not {_json_type(data)}")
        if not data:
            raise BadRequest("'data' is empty: send at least one record")
        if len(data) > MAX_ROWS:
            raise BadRequest(f"'data' has {len(data)} records; the limit is {MAX_ROWS} per request")
        for index, record in enumerate(data):
            if not isinstance(record, dict):
                raise BadRequest(f"record {index} must be an object mapping column to value, not {_json_type(record)}")
            if record.keys() != self.column_set:
                self._explain_columns(index, record)
        columns = {}
        for column, (accepted, expected, dtype) in self.kinds.items():
            values = [record[column] for record in data]
            if not accepted.issuperset(map(type, values)):
                index = next(i for i, value in enumerate(values) if type(value) not in accepted)
                raise BadRequest(
                    f"record {index}, column {column!r}: expected {expected}, got {_json_type(values[index])} "
                    f"{values[index]!r}"
                )
            columns[column] = np.array(values, dtype=dtype)
        return columns

    def _explain_columns(self, index: int, record: dict) -> None:
        missing = [c for c in self.columns if c not in record]
        unknown = sorted(set(record) - self.column_set)
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        raise BadRequest(f"record {index}: {'; '.join(problems)} (expected columns: {', '.join(self.columns)})")


def _plain(value):
    """A numpy scalar (a class label from classes_) as the Python value JSON takes."""
    return value.item() if hasattr(value, "item") else value


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


class FastPipeline:
    """`pipeline.predict(frame)` for a fitted scikit-learn Pipeline, computed with less overhead.

    Data flows as a dict of column arrays. Steps before the ColumnTransformer run as they are: through
    their `transform_columns` when they have one (tabular.DerivedFeatures), else on a DataFrame. The
    ColumnTransformer becomes numpy: numeric blocks of SimpleImputer/StandardScaler by their fitted
    statistics, categorical blocks by lookup tables built from the block's own transform of every known
    category (one column, or several through steps that act column by column). A LightGBM model (possibly inside a TransformedTargetRegressor) predicts from
    its booster. Built only when every step is covered; init() then checks it against the pipeline.
    """

    def __init__(self, pipeline):
        from sklearn.compose import ColumnTransformer

        steps = _flatten(pipeline)
        *transformers, self.predictor = steps
        split = next((i for i, step in enumerate(transformers) if isinstance(step, ColumnTransformer)), None)
        if split is None:
            raise TypeError("no ColumnTransformer in the pipeline")
        self.frame_steps = transformers[:split]
        self.encode = [self._block(*block) for block in _fitted_blocks(transformers[split])]
        if transformers[split + 1 :]:
            raise TypeError(f"steps after the ColumnTransformer are not covered: {transformers[split + 1:]}")
        self.predict_matrix = _matrix_predictor(self.predictor)

    def predict(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        import pandas as pd

        for step in self.frame_steps:
            if hasattr(step, "transform_columns"):
                columns = step.transform_columns(columns)
            else:
                frame = step.transform(pd.DataFrame(columns, copy=False))
                columns = {name: frame[name].to_numpy() for name in frame.columns}
        blocks = [encode(columns) for encode in self.encode]
        return self.predict_matrix(np.hstack(blocks) if len(blocks) > 1 else blocks[0])

    def _block(self, transformer, names: list[str]):
        chain = _flatten(transformer)
        if all(_is_numeric_step(step) for step in chain):
            return _numeric_block(chain, names)
        if len(names) == 1 or all(_acts_per_column(step) for step in chain):
            return _lookup_block(transformer, names)
        raise TypeError(f"block over {names} with {chain} is not covered")


def _is_numeric_step(step) -> bool:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if isinstance(step, StandardScaler):
        return True
    return (
        isinstance(step, SimpleImputer)
        and step.statistics_.dtype.kind == "f"
        and not np.isnan(step.statistics_).any()  # an all-missing column would be dropped, not imputed
        and isinstance(step.missing_values, float)
        and np.isnan(step.missing_values)
    )


def _flatten(estimator) -> list:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return [step for _, inner in estimator.steps if inner not in (None, "passthrough") for step in _flatten(inner)]
    return [estimator]


def _fitted_blocks(column_transformer):
    for _, transformer, names in column_transformer.transformers_:
        if transformer == "drop" or len(names) == 0:
            continue
        if transformer == "passthrough":
            raise TypeError("passthrough columns are not covered")
        yield transformer, list(names)


def _numeric_block(chain, names):
    from sklearn.impute import SimpleImputer

    def encode(columns):
        matrix = np.column_stack([np.asarray(columns[name], dtype=float) for name in names])
        for step in chain:
            if isinstance(step, SimpleImputer):
                missing = np.isnan(matrix)
                imputed = np.where(missing, step.statistics_, matrix)
                if step.indicator_ is not None:
                    imputed = np.hstack([imputed, missing[:, step.indicator_.features_].astype(float)])
                matrix = imputed
            else:  # StandardScaler
                matrix = (matrix - step.mean_) / step.scale_ if step.with_mean else matrix / step.scale_
        return matrix

    return encode


def _acts_per_column(step) -> bool:
    """A step each of whose output columns follows one input column: an imputer or a one-hot encoder."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    return type(step) in (SimpleImputer, OneHotEncoder)


def _lookup_block(transformer, names: list[str]):
    """Categorical columns, each through a lookup table: each known category (and a missing or an unseen value)
    maps to the row the block's own transform gives it, the other columns held at their first category. Exact
    by construction for one column; for several, when each output column follows one input column
    (_acts_per_column): a column's table sets the output columns its values change, the held row the rest."""
    import pandas as pd

    known = {name: [c for c in categories if isinstance(c, str)] for name, categories in zip(names, _categories(transformer))}
    held = {name: (values[0] if values else None) for name, values in known.items()}
    tables = []
    for name in names:
        values = known[name] + [None, "\x00unseen category\x00"]
        # the probes go through pandas as a request's columns do: None becomes the column's missing value
        probes = pd.DataFrame({other: [held[other]] * len(values) for other in names} | {name: values})[names]
        rows = transformer.transform(probes)
        rows = np.asarray(rows.toarray() if hasattr(rows, "toarray") else rows, dtype=float)
        changed = np.flatnonzero((rows != rows[0]).any(axis=0))
        tables.append((name, _positions(known[name]), rows[:, changed], changed))
    held_row = rows[0]  # every probe table starts with the held categories

    def encode(columns):
        # each distinct value looked up once, then one fancy index: a batch file's column is 10,000s long
        size = len(columns[names[0]])
        matrix = np.repeat(held_row[None, :], size, axis=0)
        for name, position, table, changed in tables:
            codes, distinct = pd.factorize(columns[name])  # code -1: None or NaN
            rows = np.array([position(value) for value in distinct] + [position(None)], dtype=np.intp)
            matrix[:, changed] = table[rows[codes]]
        return matrix

    return encode


def _positions(known: list[str]):
    """value -> its row in a lookup table of the known categories, then a missing value's, then an unseen one's."""
    positions = {category: position for position, category in enumerate(known)}
    missing, unseen = len(known), len(known) + 1

    def position(value) -> int:
        found = positions.get(value)
        if found is not None:
            return found
        return missing if value is None or value != value else unseen  # NaN != NaN

    return position


def _categories(transformer) -> list[list]:
    """The fitted categories of each of the block's columns."""
    for step in reversed(_flatten(transformer)):
        if hasattr(step, "categories_"):
            return [list(categories) for categories in step.categories_]
    raise TypeError(f"no fitted categories in {transformer}")


def _matrix_predictor(predictor):
    """numpy matrix -> the regressor's predictions, or a two-class classifier's probability of its second
    (positive) class, from the LightGBM booster."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.preprocessing import FunctionTransformer

    inverse = None
    if isinstance(predictor, TransformedTargetRegressor):
        transformer, predictor = predictor.transformer_, predictor.regressor_
        if type(transformer) is FunctionTransformer and transformer.inverse_func and not transformer.inv_kw_args:
            inverse = transformer.inverse_func  # elementwise (np.expm1, say): no need for its 2-D validation
        else:
            inverse = lambda values: transformer.inverse_transform(values.reshape(-1, 1)).ravel()  # noqa: E731
    two_classes = isinstance(predictor, LGBMClassifier) and len(predictor.classes_) == 2
    if not (isinstance(predictor, LGBMRegressor) or two_classes):
        raise TypeError(f"{type(predictor).__name__} is not covered")
    # a binary booster predicts the second class's probability, as LGBMClassifier.predict_proba's last column
    booster = predictor.booster_

    def predict(matrix):
        # one thread: each server worker handles one request at a time
        values = booster.predict(matrix, num_threads=1)
        return values if inverse is None else inverse(values)

    return predict


class Scorer:
    """The loaded model behind run() (online and batch): the fast path when proven exact, else the model's
    own predict (or, for a classifier, predict_proba)."""

    def __init__(self, model_folder: Path, schema: Schema):
        import mlflow
        from mlflow.models import Model

        self.schema = schema
        self.fast = None
        flavors = Model.load(str(model_folder)).flavors
        if "sklearn" in flavors:
            # the training scripts save with skops; a pickled model (an Azure AutoML one) needs no skops
            if flavors["sklearn"].get("serialization_format") == "skops":
                _import_skops_without_torch()
            self.model = mlflow.sklearn.load_model(str(model_folder))
        else:
            self.model = mlflow.pyfunc.load_model(str(model_folder))
        self.classes = None
        if schema.classifier:
            if not hasattr(self.model, "predict_proba"):
                raise ValueError(f"the model in {model_folder} is a classifier without predict_proba")
            self.classes = [_plain(name) for name in self.model.classes_]
            self._class_objects = np.array(self.classes, dtype=object)
        if "sklearn" in flavors and (self.classes is None or len(self.classes) == 2):
            self.fast = self._checked_fast_path()
        self.output_names = self._output_names()

    def scores(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Per row: a regressor's prediction, a two-class classifier's probability of its positive (second)
        class, or a row of every class's probabilities."""
        if self.fast is not None:
            return self.fast.predict(columns)
        frame = self._frame(columns)
        if self.classes is None:
            return np.asarray(self.model.predict(frame)).ravel()
        probabilities = self.model.predict_proba(frame)
        return probabilities[:, 1] if len(self.classes) == 2 else probabilities

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """A classifier's labels for its scores, as its own predict picks them: the most probable class (a tie
        goes to the first), so of two classes the positive one above 0.5; the model's own label objects."""
        picked = (scores > 0.5).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self._class_objects[picked]

    def predict(self, columns: dict[str, np.ndarray]) -> list:
        """The online answers: one number per record, or one object per record with its label and the
        positive class's probability (every class's for more than two)."""
        return self.answer(*self.scored(columns))

    def scored(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, a classifier's labels or None): what both the answer and the collected outputs are made of."""
        scores = self.scores(columns)
        return scores, (None if self.classes is None else self.labels(scores))

    def answer(self, scores: np.ndarray, labels: np.ndarray | None) -> list:
        """The online answers from `scored`."""
        if self.classes is None:
            return scores.tolist()
        labels = labels.tolist()
        if len(self.classes) == 2:
            return [{"label": label, "probability": float(p)} for label, p in zip(labels, scores)]
        return [
            {"label": label, "probabilities": dict(zip(self.classes, map(float, row)))} for label, row in zip(labels, scores)
        ]

    def output_columns(self, scores: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        """The collected outputs (model_outputs) from `scored`, one column per answer field: the prediction
        under the model's target column (`prediction` / `label` for a model without one in its metadata),
        then a two-class classifier's `probability` of the positive class, or `probability_<class>` each."""
        prediction, probabilities = self.output_names
        if self.classes is None:
            return {prediction: scores}
        if scores.ndim == 1:
            return {prediction: labels, probabilities[0]: scores}
        return {prediction: labels, **{name: scores[:, i] for i, name in enumerate(probabilities)}}

    def _output_names(self) -> tuple[str, list[str]]:
        """(the prediction's column, the probabilities' columns) of the collected outputs."""
        if self.classes is None:
            return self.schema.target or "prediction", []
        probabilities = ["probability"] if len(self.classes) == 2 else [f"probability_{name}" for name in self.classes]
        target = self.schema.target
        return (target if target and target not in probabilities else "label"), probabilities

    def _expected(self, frame) -> np.ndarray:
        """What the fast path must reproduce exactly: predictions, or the positive class's probability."""
        if self.classes is None:
            return np.asarray(self.model.predict(frame))
        return self.model.predict_proba(frame)[:, 1]

    def _frame(self, columns):
        import pandas as pd

        return pd.DataFrame(columns, copy=False)

    def _checked_fast_path(self) -> FastPipeline | None:
        try:
            fast = FastPipeline(self.model)
        except Exception as why:  # noqa: BLE001  (TypeError for a step not covered; a model of unknown make may raise any)
            log.info("no fast path for this model (%s); scoring with its own predict", why)
            return None
        probes = self.schema.to_columns(self._probe_records())
        expected = self._expected(self._frame(probes))
        try:
            got = fast.predict(probes)
        except Exception:  # noqa: BLE001  (any failure only means: no fast path)
            log.exception("fast path failed on the probe records; scoring with the model's own predict")
            return None
        if not np.array_equal(expected, got):
            log.warning("fast path disagrees with the model's predict; scoring with its own predict")
            return None
        log.info("fast path checked against the model's predict on %d probe records", len(expected))
        return fast

    def _probe_records(self) -> list[dict]:
        """The example plus, for each column, the example with that column null, and an unseen category."""
        example = self.schema.example
        records = [example] + [{**example, column: None} for column in self.schema.columns]
        records += [
            {**example, column: "an unseen category"}
            for column, kind in self.schema.kinds.items()
            if kind[2] is object and kind[0] is STRING_TYPES
        ]
        return records


# -- data collection (online: score.py) ------------------------------------------------------------------------
# The model's inputs and outputs, logged with Azure ML's data collector client (azureml-ai-monitoring) when the
# deployment turns collection on (learn.microsoft.com/azure/machine-learning/how-to-collect-production-data):
# Azure's sidecar, or the local target's stand-in (jobs/local/collector.py), writes them out. Collection never
# fails a request: every failure is counted here and logged, the first with its message, then every 100th.
COLLECTIONS = ("model_inputs", "model_outputs")
FAILURE_LOG_EVERY = 100
# How often a worker process hands the requests it buffered to the client, as one batch. A payload costs
# milliseconds of this process's CPU whatever its size (a DataFrame, the client's to_json, an HTTP post), against
# about one for scoring a 1-row request: paid twice a second instead of on every request, it all but vanishes,
# and the data still reaches the collector within a second. Azure's sidecar batches what arrives close together
# the same way ("Data collector batching").
FLUSH_INTERVAL_S = 0.5
# a buffer of this many rows wakes the flush thread at once: a burst's memory stays bounded
FLUSH_ROWS = 1000
# at exit, how long the client's worker may go on sending what it has queued (it posts from a daemon thread,
# which the interpreter would stop mid-queue; gunicorn gives a stopping worker 30 s)
FLUSH_AT_EXIT_S = 10.0
_failures = 0
_failures_lock = threading.Lock()
_started: list[DataCollection] = []  # the collections start() made in this process: flushed at exit


def collection_configured() -> bool:
    """Whether the data collector's client would collect: what azureml-ai-monitoring 1.0.0 reads
    (config.loadConfig: a config file's path, else the legacy switch)."""
    return bool(os.getenv("AZUREML_MDC_CONFIG_PATH")) or os.getenv("AZUREML_MDC_ENABLED", "false").lower() == "true"


def collection_failed(error) -> None:
    """Count a collection failure (an exception, the client's on_error, a payload it could not send) and log
    the first one and every FAILURE_LOG_EVERY-th."""
    global _failures
    with _failures_lock:
        _failures += 1
        count = _failures
    if count == 1:
        log.error("data collection failed (the request is answered all the same): %s", error)
    elif count % FAILURE_LOG_EVERY == 0:
        log.error(
            "data collection failed %d times so far (the requests are answered all the same); latest: %s", count, error
        )


def collection_failures() -> int:
    return _failures


class _SendFailures(logging.Handler):
    """Counts the payloads the client's background worker could not send (an unreachable collector, an answer
    that is not 2xx): it logs each at ERROR on `mdc.worker`, and calls no on_error for them."""

    def __init__(self):
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            collection_failed(f"{record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001  (a log handler must not raise into the worker)
            pass


class DataCollection:
    """The two collectors of an online deployment (`model_inputs`, `model_outputs`), or None from start()
    where collection is off.

    Batched. On the request's thread, collect() only appends the request's input column arrays (as checked:
    numbers as float, strings as object) and its output column arrays (Scorer.output_columns) to a buffer,
    under a lock: microseconds, no DataFrame, no JSON, no I/O. A daemon flush thread, one per worker process,
    wakes every FLUSH_INTERVAL_S (at once when FLUSH_ROWS rows wait) and makes what the buffer holds one batch:
    each column concatenated, ONE inputs DataFrame and ONE outputs DataFrame over the same rows in the same
    order, collected with one correlation context. So a batch's inputs object and outputs object share one
    correlation id, and row i of one is row i of the other: the row-level correlation Azure's monitor
    preprocessor makes (`<correlationid>_<row index>`), on objects that hold several requests' rows as the ones
    Azure's own sidecar batches do. An object's `time` is its batch's first request's (whole seconds: the
    client's payload takes the context's timestamp). At exit, the buffer is flushed, then the client sends what
    it has queued (_flush_at_exit).

    Failures are counted (collection_failed) per event: a batch whose frames cannot be built, a collect() that
    raises or calls on_error, a payload the client could not send; none reaches a request.

    Sampling stays the client's: it samples each collect() on its own, so now per batch, not per request. With
    a sampling rate below 1, a batch's inputs may be kept while its outputs are not (or the reverse), as a
    request's could before."""

    def __init__(self, collector_type):
        import pandas as pd
        from azureml.ai.monitoring.context import BasicCorrelationContext

        self._frame = pd.DataFrame
        self._context = BasicCorrelationContext
        self._starting: list = []  # on_error calls while the collectors start: collection stays off
        self.inputs = collector_type(name="model_inputs", on_error=self._on_error)
        self.outputs = collector_type(name="model_outputs", on_error=self._on_error)
        self._lock = threading.Lock()  # the buffer's
        self._buffer: list[tuple[dict, dict]] = []  # per request: (input columns, output columns)
        self._rows = 0
        self._first_time = 0.0  # the buffer's first request's time.time()
        self._flushing = threading.Lock()  # one flush at a time: the thread's, the one at exit
        self._wake = threading.Event()
        self._stopped = False

    @classmethod
    def start(cls, flush_thread: bool = True) -> DataCollection | None:
        """The collectors where the deployment collects, else None (and a log line that says why). Without
        `flush_thread` (benchmarks/serving.py times each part alone), only flush() and the exit flush."""
        if not collection_configured():
            log.info("data collection is off: AZUREML_MDC_CONFIG_PATH and AZUREML_MDC_ENABLED are not set")
            return None
        try:
            from azureml.ai.monitoring import Collector
        except ImportError as missing:
            log.warning(
                "data collection is off: the data collector's client (azureml-ai-monitoring) is missing: %s", missing
            )
            return None
        try:
            collection = cls(Collector)
        except Exception as error:  # noqa: BLE001  (an unreadable config file, say: serve without collecting)
            log.error("data collection is off: the data collector's client did not start: %r", error)
            return None
        if collection._starting:
            log.error("data collection is off: %s", collection._starting[0])
            return None
        collection._starting = None
        logging.getLogger("mdc.worker").addHandler(_SendFailures())  # after the client's own logging config
        if flush_thread:
            threading.Thread(target=collection._flush_every_interval, name="data-collection-flush", daemon=True).start()
        if not _started:
            atexit.register(_flush_at_exit)
        _started.append(collection)
        log.info("data collection is on: %s (batched every %gs)", ", ".join(COLLECTIONS), FLUSH_INTERVAL_S)
        return collection

    def _on_error(self, error: Exception) -> None:
        if self._starting is not None:
            self._starting.append(error)
        else:
            collection_failed(error)

    def collect(
        self, columns: dict[str, np.ndarray], scorer: Scorer, scores: np.ndarray, labels: np.ndarray | None
    ) -> None:
        """Buffer a request: its checked columns and its answers' output columns (Scorer.output_columns of the
        arrays the answers were made of). The arrays are kept as they are: nothing may change them after."""
        try:
            outputs = scorer.output_columns(scores, labels)
            now = time.time()
            with self._lock:
                if not self._buffer:
                    self._first_time = now
                self._buffer.append((columns, outputs))
                self._rows += len(scores)
                full = self._rows >= FLUSH_ROWS
            if full:
                self._wake.set()
        except Exception as error:  # noqa: BLE001  (collection never fails a request)
            collection_failed(error)

    def flush(self) -> int:
        """Collect what the buffer holds as one batch (see the class); the rows it held. Never raises."""
        with self._flushing:
            with self._lock:
                batch, self._buffer, self._rows = self._buffer, [], 0
                first_time = self._first_time
            if not batch:
                return 0
            try:
                inputs = self._frame(_concatenated([request[0] for request in batch]), copy=False)
                outputs = self._frame(_concatenated([request[1] for request in batch]), copy=False)
                if len(inputs) != len(outputs):
                    raise ValueError(f"a batch of {len(inputs)} input rows has {len(outputs)} output rows")
            except Exception as error:  # noqa: BLE001  (collection never fails a request)
                collection_failed(error)
                return 0
            context = self._context(timestamp=int(first_time))
            for collector, frame in ((self.inputs, inputs), (self.outputs, outputs)):
                try:
                    collector.collect(frame, context)
                except Exception as error:  # noqa: BLE001
                    collection_failed(error)
            return len(inputs)

    def close(self) -> None:
        """Stop the flush thread and flush what is buffered (after the flush under way, if one is)."""
        self._stopped = True
        self._wake.set()
        self.flush()

    def _flush_every_interval(self) -> None:
        while not self._stopped:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if self._stopped:  # close() flushes the rest
                return
            try:
                self.flush()
            except Exception as error:  # noqa: BLE001  (flush raises nothing; the thread must outlive a surprise)
                collection_failed(error)


def _concatenated(requests: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One array per column: the requests' arrays end to end, in the requests' order."""
    if len(requests) == 1:
        return requests[0]
    return {name: np.concatenate([request[name] for request in requests]) for name in requests[0]}


def _flush_at_exit() -> None:
    """Flush what the collections still buffer, then let the client send what it has queued
    (azureml.ai.monitoring's teardown), for FLUSH_AT_EXIT_S at most."""
    for collection in _started:
        collection.close()
    try:
        from azureml.ai.monitoring.init import teardown
    except ImportError:
        return
    flusher = threading.Thread(target=teardown, kwargs={"wait_for_flush": True}, daemon=True)
    flusher.start()
    flusher.join(FLUSH_AT_EXIT_S)


def _skops_serialized(model_folder: Path) -> bool:
    """Whether the MLflow model is a scikit-learn one saved with skops (MLmodel: flavors.sklearn), read without
    importing MLflow."""
    import yaml

    flavors = yaml.safe_load((Path(model_folder) / "MLmodel").read_text()).get("flavors") or {}
    return (flavors.get("sklearn") or {}).get("serialization_format") == "skops"


def _import_skops_without_torch() -> None:
    """Import skops.io (which loads the training scripts' scikit-learn models) without PyTorch, where nothing
    has imported it yet: skops lists scikit-learn's estimators, a walk over its modules that imports its
    array-API shim for PyTorch and so PyTorch itself, seconds and 180 MB in each scoring process, for models
    that hold none. The walk skips a module that fails to import. tabular.import_skops_without_torch does the
    same for the training scripts; it cannot be shared: each model carries tabular.py alone in its code_paths.
    Called before MLflow is imported: skops' import looks up each of SciPy's ufuncs in every loaded module."""
    if "torch" in sys.modules or "skops.io" in sys.modules:
        return
    importlib.import_module("sklearn.utils")  # first: SciPy's stats fail to import while torch is None
    sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
    try:
        importlib.import_module("skops.io")
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
