"""Scoring script for the batch endpoint, in Azure ML and on the local target (jobs/local/batch.py).

Azure ML's batch deployment calls init() once per worker process, then run(mini_batch) once per mini-batch:
a list of paths to `mini_batch_size` files of the input folder. With `output_action: append_row`, what run()
returns is appended to the job's one output file (`output_file_name`), as pandas writes a DataFrame: one
line per row, space-separated, no header ("Author scoring scripts for batch deployments"; Microsoft's
examples read it back with `pd.read_csv(path, header=None, sep=" ")`).

Each file is a CSV with a header (delimiter `,`, `;`, tab or `|`, detected per file) holding the model's
columns by name; other columns are ignored, an empty field is a missing value. Every data row of every
file comes back as one output row, scored with the same model code as score.py (scoring.py):

    file row status <prediction columns> error
    file        the file's name
    row         the row's index in the file (0: the first row after the header); empty when the file's rows
                could not be read at all
    status      ok, or error
    prediction  a regressor's `prediction`; a two-class classifier's `label` and `probability` (of the
                positive class, as score.py answers); with more classes, `label` and one probability per
                class in the model's order. Empty on an error row.
    error       why the row was not scored: bytes that are not UTF-8 CSV text, a missing column (every row of
                the file), a value that does not read as its column's type (that row); empty on an ok row

How errors surface in Azure: the service counts a failed file only when run() raises (every file of the
mini-batch fails, and the mini-batch is retried first) or returns fewer elements than the mini-batch has
files (`mini_batch_error_threshold` and the item `error_threshold`, "How to use parallel job in pipeline";
the deployment's `error_threshold` counts file failures, BatchDeploymentProperties.errorThreshold). A bad
file must not take its mini-batch's good files down, so bad data never raises here: its rows are error rows
in the output, beside the others, and are logged (logs/user/stdout in the job), as Azure's own MLflow
batch driver logs "Error processing input file" and goes on (how-to-troubleshoot-batch-endpoints). What
does raise is everything else (the model failing to load or to predict): that mini-batch is retried, then
counted against error_threshold.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scoring import Schema, Scorer, find_model_folder

OK, ERROR = "ok", "error"
DELIMITERS = ",;\t|"
SHOWN_VALUE_CHARACTERS = 40

log = logging.getLogger("batch_score")
_scorer: Scorer | None = None


class BadFile(ValueError):
    """A file none of whose rows can be scored, for one reason: `rows` are their indexes, or None when the
    rows themselves cannot be read."""

    def __init__(self, reason: str, rows: np.ndarray | None = None):
        super().__init__(reason)
        self.reason, self.rows = reason, rows


def init() -> None:
    global _scorer
    folder = find_model_folder(os.environ["AZUREML_MODEL_DIR"])
    _scorer = Scorer(folder, Schema(folder))
    log.info("model loaded from %s; columns: %s", folder, ", ".join(_scorer.schema.columns))


def run(mini_batch: list[str]) -> pd.DataFrame:
    """Every data row of the mini-batch's files, scored or not, in the columns above."""
    parts = [score_file(Path(path)) for path in mini_batch]
    return pd.concat(parts, ignore_index=True) if parts else _empty()


def output_columns(scorer: Scorer) -> list[str]:
    classes = scorer.classes
    if classes is None:
        predictions = ["prediction"]
    elif len(classes) == 2:
        predictions = ["label", "probability"]
    else:
        predictions = ["label", *(f"probability_{name}" for name in classes)]
    return ["file", "row", "status", *predictions, "error"]


def score_file(path: Path) -> pd.DataFrame:
    """One output row per data row of the file: scored, or an error row saying why not."""
    try:
        columns, bad = typed_columns(read_rows(path, _scorer.schema), _scorer.schema)
    except BadFile as problem:
        log.error("%s: not scored: %s", path.name, problem)
        return _errors(path.name, problem.rows, problem.reason)
    parts = []
    good = np.flatnonzero(~bad.mask)
    if len(good):
        if bad:
            columns = {name: values[good] for name, values in columns.items()}
        parts.append(_scored(path.name, good, _scorer.scores(columns)))
    if bad:
        log.error("%s: %d row(s) not scored, the first (row %d): %s", path.name, len(bad.rows), bad.rows[0], bad.reasons[0])
        parts.append(_errors(path.name, bad.rows, bad.reasons))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] if parts else _empty()


def read_rows(path: Path, schema: Schema) -> pd.DataFrame:
    """The file's model columns, numbers read as floats when every value is one (else as text, for
    typed_columns to find the rows that are not)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError) as error:
        raise BadFile(f"cannot be read as UTF-8 CSV text: {error}") from None
    if not header.strip():
        raise BadFile("is empty: no header line naming its columns")
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=DELIMITERS).delimiter
    except csv.Error:  # one column: nothing to sniff
        delimiter = ","
    present = next(csv.reader([header], delimiter=delimiter))
    options = dict(sep=delimiter, encoding="utf-8", keep_default_na=False, na_values=[""])
    missing = [column for column in schema.columns if column not in present]
    if missing:
        rows = _read(path, usecols=[0], **options)  # the rows each get the error
        raise BadFile(
            f"missing column(s) {', '.join(missing)} (expected columns: {', '.join(schema.columns)}; "
            f"found: {', '.join(present)})",
            np.arange(len(rows)),
        )
    numbers = {c: "float64" for c, kind in schema.kinds.items() if kind[2] is float}
    as_text = dict.fromkeys(schema.columns, object)
    try:
        return _read(path, usecols=schema.columns, dtype={**as_text, **numbers}, **options)
    except ValueError:  # a value that is not a number: read as text, and find which rows
        return _read(path, usecols=schema.columns, dtype=as_text, **options)


def _read(path: Path, **options) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError as error:
        raise BadFile(f"cannot be read as UTF-8 CSV text: {error}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise BadFile(f"cannot be read as CSV: {str(error).strip()}") from None


class _BadRows:
    """Rows whose values do not read as their column's type: a mask over the file's rows, their indexes
    and one reason each (the first bad column of the row)."""

    def __init__(self, size: int):
        self.mask = np.zeros(size, dtype=bool)
        self.reasons_by_row: dict[int, str] = {}

    def add(self, column: str, expected: str, values: np.ndarray, bad: np.ndarray) -> None:
        for row in np.flatnonzero(bad & ~self.mask):
            shown = str(values[row])[:SHOWN_VALUE_CHARACTERS]
            self.reasons_by_row[int(row)] = f"column {column!r}: expected {expected}, got {shown!r}"
        self.mask |= bad

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.mask)

    @property
    def reasons(self) -> list[str]:
        return [self.reasons_by_row[int(row)] for row in self.rows]

    def __bool__(self) -> bool:
        return bool(self.mask.any())


def typed_columns(frame: pd.DataFrame, schema: Schema) -> tuple[dict[str, np.ndarray], _BadRows]:
    """One numpy array per model column as score.py's checks make them (floats with NaN for numbers;
    text or missing; True/False for booleans), and the rows whose values are not of their column's type."""
    bad = _BadRows(len(frame))
    columns = {}
    for column, (_, expected, dtype) in schema.kinds.items():
        values = frame[column].to_numpy()
        if dtype is float and values.dtype.kind != "f":
            numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            bad.add(column, "a number", values, np.isnan(numbers) & ~pd.isna(values))
            values = numbers
        elif expected.startswith("true"):  # a boolean column: true or false, in any case
            text = pd.Series(values, dtype=object).str.lower()
            truth = text.map({"true": True, "false": False})
            bad.add(column, "true or false", values, truth.isna().to_numpy() & ~pd.isna(values))
            values = truth.astype(object).where(truth.notna(), None).to_numpy()
        columns[column] = values
    return columns, bad


def _scored(name: str, rows: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    size = len(rows)
    data = {"file": np.full(size, name, dtype=object), "row": pd.array(rows, dtype="Int64"), "status": np.full(size, OK, dtype=object)}
    if _scorer.classes is None:
        data["prediction"] = scores
    else:
        data["label"] = _scorer.labels(scores)
        if scores.ndim == 1:
            data["probability"] = scores
        else:
            data.update({f"probability_{label}": scores[:, i] for i, label in enumerate(_scorer.classes)})
    data["error"] = np.full(size, None, dtype=object)
    return pd.DataFrame(data, columns=output_columns(_scorer))


def _errors(name: str, rows: np.ndarray | None, reasons: list[str] | str) -> pd.DataFrame:
    """Error rows: one per row index given, or one for the whole file when its rows are unknown."""
    size = 1 if rows is None else len(rows)
    return pd.DataFrame(
        {
            "file": np.full(size, name, dtype=object),
            "row": pd.array([None] if rows is None else rows, dtype="Int64"),
            "status": np.full(size, ERROR, dtype=object),
            "error": np.full(size, reasons, dtype=object) if isinstance(reasons, str) else np.array(reasons, dtype=object),
        },
        columns=output_columns(_scorer),
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=output_columns(_scorer))
