"""Request lengths (and arrival times, when present) read from a table of token counts.

``.csv`` or ``.jsonl``: one request per row/line. The length columns are
recognised by name (case-insensitive): ``input_len/output_len``, ``prompt_len/output_len``,
``num_prefill_tokens/num_decode_tokens`` (Vidur's processed traces),
``ContextTokens/GeneratedTokens`` (Azure's raw LLM inference traces). An optional arrival
column ``arrived_at``, ``arrival_time`` or ``timestamp`` holds seconds or date-times.

Every problem with a file becomes a one-line ``KvsimError`` naming the file and, where it
helps, the column and request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError

LENGTH_COLUMNS = (
    ("input_len", "output_len"),
    ("prompt_len", "output_len"),
    ("num_prefill_tokens", "num_decode_tokens"),
    ("contexttokens", "generatedtokens"),
)
ARRIVAL_COLUMNS = ("arrived_at", "arrival_time", "timestamp")


@dataclass(frozen=True)
class FileRows:
    """A file's requests in file order; ``timestamp`` (s, any origin) is None when it has none."""

    name: str
    prompt_len: np.ndarray
    output_len: np.ndarray
    timestamp: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompt_len)

    def shuffled(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """All rows once, in a random order: one block of the lengths stream."""
        order = rng.permutation(len(self))
        return self.prompt_len[order], self.output_len[order]


def one_line(err: BaseException) -> str:
    """The first line of an exception's message: library errors can span many."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_table(path: Path) -> FileRows:
    """Read a CSV or JSONL file of token counts."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        frame = _read_jsonl(path)
    else:
        raise KvsimError(
            f"{path}: unsupported trace format {suffix or '(no suffix)'!r}: "
            "use .csv or .jsonl (token counts) or .json (ShareGPT)"
        )
    return _rows_from_table(path, frame)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise KvsimError(f"cannot read CSV {path}: {one_line(err)}") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KvsimError(f"cannot read JSONL {path}: {one_line(err)}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise KvsimError(f"{path}, line {number}: malformed JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise KvsimError(f"{path}, line {number}: expected a JSON object per line")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _rows_from_table(path: Path, frame: pd.DataFrame) -> FileRows:
    columns = {str(c).strip().lower(): c for c in frame.columns}
    pair = next((p for p in LENGTH_COLUMNS if all(c in columns for c in p)), None)
    if pair is None:
        expected = ", ".join("/".join(p) for p in LENGTH_COLUMNS)
        found = ", ".join(map(str, frame.columns)) or "none"
        raise KvsimError(f"{path}: no token-count columns (expected one of {expected}; found {found})")
    if frame.empty:
        raise KvsimError(f"{path}: no requests")
    prompt, output = (_token_counts(path, frame[columns[c]]) for c in pair)
    arrival = next((columns[c] for c in ARRIVAL_COLUMNS if c in columns), None)
    timestamp = None if arrival is None else _seconds(path, frame[arrival])
    return FileRows(path.stem, prompt, output, timestamp)


def _first_bad(path: Path, column: pd.Series, ok: np.ndarray, expected: str) -> KvsimError:
    index = int(np.flatnonzero(~ok)[0])
    value = column.iloc[index]
    shown = "nothing" if pd.isna(value) else repr(value) if isinstance(value, str) else str(value)
    return KvsimError(
        f"{path}: column {column.name!r}, request {index + 1}: expected {expected}, got {shown}"
    )


def _token_counts(path: Path, column: pd.Series) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(values) & (values >= 1) & (values == np.floor(values))
    if not ok.all():
        raise _first_bad(path, column, ok, "a positive whole number of tokens")
    return values.astype(np.int64)


def _seconds(path: Path, column: pd.Series) -> np.ndarray:
    """Arrival times in seconds: numbers as they are, date-times (Azure's raw traces) from the first."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(column) and np.isnan(values).all():
        stamps = pd.to_datetime(column, errors="coerce", format="ISO8601")
        values = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    ok = np.isfinite(values)
    if not ok.all():
        raise _first_bad(path, column, ok, "an arrival time (seconds or an ISO 8601 date-time)")
    return values
