"""Read rows (dicts with named fields) from JSON, JSON Lines, CSV or Parquet files.

Errors name the file, the line and the field, so a broken data file is fixed in one go.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import DataError

FORMATS = ("json", "jsonl", "csv", "parquet")


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise DataError(f"unknown data format {fmt!r} for {path}; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    return {"json": "json", "jsonl": "jsonl", "csv": "csv", "parquet": "parquet", "pq": "parquet"}.get(suffix, "jsonl")


def read_rows(path: str | Path, fmt: str | None = None) -> list[dict]:
    """All rows of a data file. `.json` may hold a JSON array or JSON Lines (TOFU's files)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    fmt = _format_of(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:
            raise DataError(f"cannot read Parquet file {path}: {e}") from None
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [dict(row) for row in csv.DictReader(f)]
    text = path.read_text(encoding="utf-8")
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
        return _check_objects(rows, path)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: malformed JSON on line {lineno}: {e.msg} (column {e.colno})") from None
        if not isinstance(rows[-1], dict):
            raise DataError(f"{path}: line {lineno} is not a JSON object")
    return rows


def _check_objects(rows, path: Path) -> list[dict]:
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of objects")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: element {i} is not a JSON object")
    return rows


def require_fields(rows: list[dict], fields: tuple[str, ...], source: str) -> None:
    """Every row has every field (non-null); the error names the row (line) and field."""
    for i, row in enumerate(rows, start=1):
        for field in fields:
            if row.get(field) is None:
                have = ", ".join(sorted(row)) or "none"
                raise DataError(
                    f"{source}: row {i} (line {i}) lacks the field {field!r} (it has: {have}); "
                    "set the field names in the data config (question_key / answer_key)"
                )


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a text file (TOFU's idontknow.jsonl is plain text)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
