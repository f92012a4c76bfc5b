"""Reading and writing the small files under meta/: JSON and the task table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vla.data.schema import TASKS_INDEX_COLUMN


def write_json(path: Path, payload: Any) -> None:
    """Write JSON to a temporary name, then rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=4, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet: task strings as the pandas index, one column task_index.

    lerobot reads this file with pandas and looks tasks up by index, so the
    pandas metadata that marks the index column must be present.
    """
    pandas_meta = {
        "index_columns": [TASKS_INDEX_COLUMN],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": TASKS_INDEX_COLUMN,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field(TASKS_INDEX_COLUMN, pa.string())],
        metadata={"pandas": json.dumps(pandas_meta)},
    )
    table = pa.table({"task_index": list(range(len(tasks))), TASKS_INDEX_COLUMN: list(tasks)}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_tasks(path: Path) -> list[str]:
    """Task strings ordered by task_index; raises ValueError on a malformed table."""
    table = pq.read_table(path)
    names = table.column_names
    if "task_index" not in names:
        raise ValueError(f"no task_index column (columns: {names})")
    text_column = next((c for c in (TASKS_INDEX_COLUMN, "task") if c in names), None)
    if text_column is None:
        # A named pandas index is stored under its own name; the metadata says which.
        meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
        index_columns = [c for c in meta.get("index_columns", []) if isinstance(c, str) and c in names]
        if not index_columns:
            raise ValueError(f"no task text column (columns: {names})")
        text_column = index_columns[0]
    indices = table.column("task_index").to_pylist()
    texts = table.column(text_column).to_pylist()
    if sorted(indices) != list(range(len(indices))):
        raise ValueError(f"task_index values must be 0..{len(indices) - 1}, got {sorted(indices)}")
    ordered = [""] * len(indices)
    for i, text in zip(indices, texts, strict=True):
        if not isinstance(text, str):
            raise ValueError(f"task {i} is not a string: {text!r}")
        ordered[i] = text
    return ordered
