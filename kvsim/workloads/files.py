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

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kvsim.errors import KvsimError

if TYPE_CHECKING:  # imported on use: a CSV of plain numbers is read without it
    import pandas as pd

LENGTH_COLUMNS = (
    ("input_len", "output_len"),
    ("prompt_len", "output_len"),
    ("num_prefill_tokens", "num_decode_tokens"),
    ("contexttokens", "generatedtokens"),
)
ARRIVAL_COLUMNS = ("arrived_at", "arrival_time", "timestamp")
# A cell that pandas and float() both read as the same number (both round correctly).
PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


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
        rows = _plain_csv(path)
        if rows is not None:
            return rows
        frame = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        frame = _read_jsonl(path)
    else:
        raise KvsimError(
            f"{path}: unsupported trace format {suffix or '(no suffix)'!r}: "
            "use .csv or .jsonl (token counts) or .json (ShareGPT)"
        )
    return _rows_from_table(path, frame)


def _plain_csv(path: Path) -> FileRows | None:
    """The rows of a CSV whose header names each column once, whose rows all have a cell per
    column and whose cells in the columns used are plain decimal numbers, valid as lengths and
    times, read as pandas reads them but without importing it (that takes longer than
    simulating a small run); None for any other file, which pandas reads and explains."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            table = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    header = table[0] if table else []
    pair, arrival = _named_columns(header)
    if pair is None or len(table) < 2 or len(set(header)) != len(header) or header[0].startswith("\ufeff"):
        return None  # pandas drops a byte-order mark, and renames repeated names
    if any(len(row) != len(header) for row in table):
        return None
    used = [header.index(name) for name in (*pair, arrival) if name is not None]
    cells = [[row[i] for row in table[1:]] for i in used]
    if not all(PLAIN_NUMBER.fullmatch(cell) for column in cells for cell in column):
        return None
    prompt, output, *timestamp = (np.fromiter(map(float, column), float, len(column)) for column in cells)
    lengths_ok = all(_whole_counts(column).all() for column in (prompt, output))
    if not lengths_ok or not all(np.isfinite(column).all() for column in timestamp):
        return None
    return FileRows(path.stem, prompt.astype(np.int64), output.astype(np.int64), *timestamp)


def _named_columns(names) -> tuple[tuple | None, object | None]:
    """The names of the length columns (None if missing) and of the arrival column (None if
    none) among ``names``, recognised case-insensitively."""
    columns = {str(c).strip().lower(): c for c in names}
    pair = next((p for p in LENGTH_COLUMNS if all(c in columns for c in p)), None)
    arrival = next((columns[c] for c in ARRIVAL_COLUMNS if c in columns), None)
    return None if pair is None else tuple(columns[c] for c in pair), arrival


def _whole_counts(values: np.ndarray) -> np.ndarray:
    """Which ``values`` are token counts: positive whole numbers."""
    return np.isfinite(values) & (values >= 1) & (values == np.floor(values))


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise KvsimError(f"cannot read CSV {path}: {one_line(err)}") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    import pandas as pd

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
    pair, arrival = _named_columns(frame.columns)
    if pair is None:
        expected = ", ".join("/".join(p) for p in LENGTH_COLUMNS)
        found = ", ".join(map(str, frame.columns)) or "none"
        raise KvsimError(f"{path}: no token-count columns (expected one of {expected}; found {found})")
    if frame.empty:
        raise KvsimError(f"{path}: no requests")
    prompt, output = (_token_counts(path, frame[c]) for c in pair)
    timestamp = None if arrival is None else _seconds(path, frame[arrival])
    return FileRows(path.stem, prompt, output, timestamp)


def _first_bad(path: Path, column: pd.Series, ok: np.ndarray, expected: str) -> KvsimError:
    import pandas as pd

    index = int(np.flatnonzero(~ok)[0])
    value = column.iloc[index]
    shown = "nothing" if pd.isna(value) else repr(value) if isinstance(value, str) else str(value)
    return KvsimError(
        f"{path}: column {column.name!r}, request {index + 1}: expected {expected}, got {shown}"
    )


def _token_counts(path: Path, column: pd.Series) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    ok = _whole_counts(values)
    if not ok.all():
        raise _first_bad(path, column, ok, "a positive whole number of tokens")
    return values.astype(np.int64)


def _seconds(path: Path, column: pd.Series) -> np.ndarray:
    """Arrival times in seconds: numbers as they are, date-times (Azure's raw traces) from the first."""
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(column) and np.isnan(values).all():
        stamps = pd.to_datetime(column, errors="coerce", format="ISO8601")
        values = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    ok = np.isfinite(values)
    if not ok.all():
        raise _first_bad(path, column, ok, "an arrival time (seconds or an ISO 8601 date-time)")
    return values
