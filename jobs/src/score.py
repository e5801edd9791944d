"""Scoring script for the online endpoints, in Azure ML and on the local target.

The Azure ML inference server (azmlinfsrv) imports this file, calls init() once per worker, then run()
once per request with the request's `data`:

    POST /score  {"data": [{"longitude": -122.23, ..., "ocean_proximity": "NEAR BAY"}, ...]}
    -> [452600.0, ...]                      a regressor: one prediction per record, in order
    -> [{"label": "no", "probability": 0.07}, ...]
                                            a two-class classifier: the predicted label and the probability
                                            of the positive class (the second of the model's classes, "yes")
    -> [{"label": "b", "probabilities": {"a": 0.1, "b": 0.7, "c": 0.2}}, ...]
                                            a classifier of more classes: every class's probability

The columns, their types and the Swagger example come from the model's MLflow signature and input
example; a classifier's classes from the model's metadata (`task`, `classes`, which train.py and
automl.py write). So this script serves any tabular model the training scripts save. Bad input gets a
400 that names the problem; the server answers the JSON-level cases itself (body not JSON, no `data`).

Hot path: for a scikit-learn model, requests skip pandas and sklearn's per-call validation where that
is proven to give the same numbers (see `FastPipeline`); anything else goes through the model's own
predict.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from azureml_inference_server_http.api.aml_response import AMLResponse
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

# larger batches belong in a batch endpoint; the limit keeps one request from starving the workers
MAX_ROWS = int(os.environ.get("SCORE_MAX_ROWS", "5000"))

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
    statistics, one-column categorical blocks by a lookup table built from the block's own transform of
    every known category. A LightGBM model (possibly inside a TransformedTargetRegressor) predicts from
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
        if len(names) == 1:
            return _lookup_block(transformer, names[0])
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


def _lookup_block(transformer, name):
    """One categorical column: each known category (and a missing or an unseen value) maps to the row the
    block's own transform gives it, so the table is exact by construction."""
    import pandas as pd

    known = [c for c in _categories(transformer) if isinstance(c, str)]
    # the probes go through pandas as a request's column does: None becomes the column's missing value
    probes = pd.DataFrame({name: known + [None, "\x00unseen category\x00"]})
    rows = transformer.transform(probes)
    rows = np.asarray(rows.toarray() if hasattr(rows, "toarray") else rows, dtype=float)
    table = dict(zip(known, rows[: len(known)]))
    missing_row, unseen_row = rows[len(known)], rows[len(known) + 1]

    def row(value):
        found = table.get(value)
        if found is not None:
            return found
        return missing_row if value is None or value != value else unseen_row  # NaN != NaN

    def encode(columns):
        return np.vstack([row(value) for value in columns[name]])

    return encode


def _categories(transformer) -> list:
    for step in reversed(_flatten(transformer)):
        if hasattr(step, "categories_"):
            return list(step.categories_[0])
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
    """The loaded model behind run(): the fast path when proven exact, else the model's own predict (or,
    for a classifier, predict_proba)."""

    def __init__(self, model_folder: Path, schema: Schema):
        import mlflow
        from mlflow.models import Model

        self.schema = schema
        self.fast = None
        flavors = Model.load(str(model_folder)).flavors
        if "sklearn" in flavors:
            self.model = mlflow.sklearn.load_model(str(model_folder))
        else:
            self.model = mlflow.pyfunc.load_model(str(model_folder))
        self.classes = None
        if schema.classifier:
            if not hasattr(self.model, "predict_proba"):
                raise ValueError(f"the model in {model_folder} is a classifier without predict_proba")
            self.classes = [_plain(name) for name in self.model.classes_]
        if "sklearn" in flavors and (self.classes is None or len(self.classes) == 2):
            self.fast = self._checked_fast_path()

    def predict(self, columns: dict[str, np.ndarray]) -> list:
        if self.classes is None:
            if self.fast is not None:
                return self.fast.predict(columns).tolist()
            return np.asarray(self.model.predict(self._frame(columns))).ravel().tolist()
        if self.fast is not None:
            return self._answers(self.fast.predict(columns))
        probabilities = self.model.predict_proba(self._frame(columns))
        return self._answers(probabilities[:, 1] if len(self.classes) == 2 else probabilities)

    def _answers(self, probabilities: np.ndarray) -> list[dict]:
        """A classifier's answers: as its own predict picks the label (the most probable class; a tie goes
        to the first), with the positive class's probability, or every class's for more than two."""
        if len(self.classes) == 2:
            negative, positive = self.classes
            return [{"label": positive if p > 0.5 else negative, "probability": float(p)} for p in probabilities]
        return [
            {"label": self.classes[int(row.argmax())], "probabilities": dict(zip(self.classes, map(float, row)))}
            for row in probabilities
        ]

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
        except TypeError as why:
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


if not os.environ.get("AZUREML_MODEL_DIR"):
    raise RuntimeError("AZUREML_MODEL_DIR is not set: it must point at the folder holding the MLflow model")
_model_folder = find_model_folder(os.environ["AZUREML_MODEL_DIR"])
_schema = Schema(_model_folder)
_scorer: Scorer | None = None


def init() -> None:
    global _scorer
    _scorer = Scorer(_model_folder, _schema)
    log.info("model loaded from %s; columns: %s", _model_folder, ", ".join(_schema.columns))


# convert_to_provided_type=False: the decorators describe the request for the Swagger; run() checks it,
# so that a wrong value is a 400 naming the record and column, not inference-schema's 500
@input_schema("data", StandardPythonParameterType([_schema.example]), convert_to_provided_type=False)
@output_schema(StandardPythonParameterType(_schema.answer_example()))
def run(data):
    try:
        columns = _schema.to_columns(data)
    except BadRequest as problem:
        return AMLResponse({"message": str(problem)}, 400, json_str=True)
    return _scorer.predict(columns)
