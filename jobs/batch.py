"""Batch scoring's files, the same for both targets: the flow's sample input folder, and the output that
jobs/src/batch_score.py's rows make (`output_action: append_row`), read back and counted.

The output's rows are `file row status <prediction columns> error` (batch_score.py), space-separated with no
header, as Azure appends what run() returns (pandas' DataFrame.to_csv).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.flow import FlowError, Report

if TYPE_CHECKING:
    import pandas as pd

ERRORS_SHOWN = 5
# the output's columns that any scoring model's rows share: file, row, status first, error last
FILE, ROW, STATUS, FIRST_PREDICTION = 0, 1, 2, 3
ERROR_STATUS = "error"
SAMPLE_FILE = "sample-{number}.csv"


@dataclass
class Tally:
    """The rows of a batch output, counted: scored, failed (a row of a file with an error), and files whose
    rows could not be read at all (one error row each, its row empty)."""

    scored: int = 0
    failed: int = 0
    unreadable: int = 0
    files: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # the first few reasons, each with its file and rows

    @classmethod
    def of(cls, frame: "pd.DataFrame") -> "Tally":
        """Count an output frame: what run() returned, or the output file read back (read_output)."""
        import pandas as pd

        failed = frame.iloc[:, STATUS].to_numpy(dtype=object) == ERROR_STATUS
        unknown_rows = frame.iloc[:, ROW].isna().to_numpy()
        errors = []
        bad = frame[failed]
        for (name, error), rows in bad.groupby([bad.iloc[:, FILE], bad.iloc[:, -1]], sort=False, dropna=False):
            first, count = rows.iloc[0, ROW], len(rows)
            where = "" if pd.isna(first) else f" row {first}" if count == 1 else f" {count} rows from row {first}"
            errors.append(f"{name}{where}: {error}")
            if len(errors) == ERRORS_SHOWN:
                break
        return cls(
            scored=int((~failed).sum()),
            failed=int((failed & ~unknown_rows).sum()),
            unreadable=int((failed & unknown_rows).sum()),
            files={str(name) for name in pd.unique(frame.iloc[:, FILE])},
            errors=errors,
        )

    def add(self, other: "Tally") -> None:
        self.scored += other.scored
        self.failed += other.failed
        self.unreadable += other.unreadable
        self.files |= other.files
        self.errors = (self.errors + other.errors)[:ERRORS_SHOWN]


@dataclass
class BatchSummary:
    """What a batch scoring run did, on either target."""

    output: str  # where the predictions are: a local file (downloaded from Azure's job, there)
    files: int  # input files
    tally: Tally
    error_threshold: int
    failed_items: int | None = None  # files counted against error_threshold; None: only Azure's job knows
    location: str | None = None  # the Azure job's studio URL

    @property
    def passed(self) -> bool:
        return self.failed_items is None or self.error_threshold < 0 or self.failed_items <= self.error_threshold

    def line(self) -> str:
        tally = self.tally
        without = self.files - len(tally.files)
        parts = [f"{self.files} files", f"{tally.scored:,} rows scored", f"{tally.failed:,} rows failed"]
        if tally.unreadable:
            parts.append(f"{tally.unreadable} unreadable file(s), rows unknown")
        if without:
            parts.append(f"{without} file(s) with no output row (no data rows, or their mini-batch failed)")
        if self.failed_items is not None:
            threshold = "any" if self.error_threshold < 0 else self.error_threshold
            parts.append(f"failed items {self.failed_items} (error_threshold: {threshold})")
        return "; ".join(parts)

    def report(self, report: Report) -> None:
        report(f"batch: {self.line()}")
        for error in self.tally.errors:
            report(f"  {error}")
        report(f"  predictions: {self.output}" + (f" (job: {self.location})" if self.location else ""))


def _frame(path: Path) -> "pd.DataFrame":
    import pandas as pd

    return pd.read_csv(path, sep=" ", header=None, dtype=str, keep_default_na=False, na_values=[""])


def read_output(path: Path) -> Tally:
    """Count a batch output file as Azure writes it (space-separated, quoted where needed, no header)."""
    if not Path(path).stat().st_size:
        return Tally()
    return Tally.of(_frame(path))


def input_files(folder: Path) -> list[Path]:
    """The files a batch job scores: every file of the folder, sorted (FlowError when there are none)."""
    found = sorted(path for path in Path(folder).iterdir() if path.is_file()) if Path(folder).is_dir() else []
    if not found:
        raise FlowError(f"no input files in {folder}")
    return found


def write_sample(request: dict, folder: Path) -> int:
    """The workload's sample request as a batch input folder: one CSV file per record (header, then its row;
    a null is an empty field), so the output's file and row name each record. Returns the record count."""
    records = request["data"]
    Path(folder).mkdir(parents=True, exist_ok=True)
    for number, record in enumerate(records, start=1):
        with (Path(folder) / SAMPLE_FILE.format(number=number)).open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(record)
            writer.writerow(["" if value is None else value for value in record.values()])
    return len(records)


def sample_problem(summary: BatchSummary, records: int, answers: list | None) -> str | None:
    """What is wrong with the batch output of the sample folder (write_sample), or None: every record scored,
    none failed, and each prediction the one an online endpoint answered for the same record (when the
    workload serves online too)."""
    tally = summary.tally
    if tally.failed or tally.unreadable or tally.scored != records:
        return f"expected {records} rows scored and none failed; {summary.line()}"
    if answers is None:
        return None
    frame = _frame(Path(summary.output))
    order = frame.iloc[:, FILE].map(lambda name: int(Path(name).stem.rsplit("-", 1)[-1]))
    for (_, row), answer in zip(frame.iloc[order.argsort()].iterrows(), answers):
        if isinstance(answer, dict):  # a classifier's label, and the positive class's probability when there are two
            ours = row.iloc[FIRST_PREDICTION : FIRST_PREDICTION + 2].tolist()
            same = str(answer["label"]) == ours[0] and (
                "probability" not in answer or math.isclose(float(ours[1]), answer["probability"], rel_tol=1e-9)
            )
        else:
            ours = row.iloc[FIRST_PREDICTION : FIRST_PREDICTION + 1].tolist()
            same = math.isclose(float(ours[0]), answer, rel_tol=1e-9)
        if not same:
            return f"{row.iloc[FILE]}: the batch output {ours} differs from the online answer {answer}"
    return None
