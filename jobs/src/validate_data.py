"""Step 1 of a retraining pipeline: check the data against the workload's expectations, then pass it on.

    python validate_data.py --data CSV --target COLUMN --columns NAME:number,NAME:string,... --min-rows N --output FILE

Every problem is reported at once, each naming its column: a missing column, a column whose values do not
read as its type, too few rows with a target. The data is copied to FILE only when it passes, so the steps
after this one train on checked data only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

import tabular

TYPES = ("number", "string")


def expected_columns(text: str) -> dict[str, str]:
    columns = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, kind = item.rpartition(":")
        if not name or kind not in TYPES:
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME:number or NAME:string")
        columns[name] = kind
    return columns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="CSV file (any delimiter)")
    parser.add_argument("--target", required=True, help="the column the models predict")
    parser.add_argument("--columns", required=True, type=expected_columns, help="the feature columns and their types")
    parser.add_argument("--min-rows", type=int, default=1, help="the fewest rows with a target")
    parser.add_argument("--output", required=True, type=Path, help="where the checked data is written")
    return parser.parse_args(argv)


def problems(frame: pd.DataFrame, target: str, columns: dict[str, str], min_rows: int) -> list[str]:
    found = []
    for name in [target, *columns]:
        if name not in frame.columns:
            found.append(f"column {name!r} is missing (the data has: {', '.join(map(str, frame.columns))})")
    for name, kind in columns.items():
        if name in frame.columns and (kind == "number") != pd.api.types.is_numeric_dtype(frame[name]):
            values = frame[name].dropna().astype(str).head(3).tolist()
            found.append(f"column {name!r} should hold {kind}s, but its values read as {frame[name].dtype} (e.g. {values})")
    if target in frame.columns:
        rows = int(frame[target].notna().sum())
        if rows < min_rows:
            found.append(f"column {target!r} (the target) has a value in {rows} rows; at least {min_rows} are expected")
    return found


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    frame = tabular.read_table(args.data)
    found = problems(frame, args.target, args.columns, args.min_rows)
    if found:
        sys.exit(f"validate_data.py: {args.data} does not have what the workload expects:\n  " + "\n  ".join(found))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.data, args.output)
    print(f"{args.data}: {len(frame)} rows; {len(args.columns)} feature columns and the target {args.target!r} as expected")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"validate_data.py: error: {error}")
