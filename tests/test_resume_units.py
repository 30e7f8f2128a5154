"""Single-file resumable units: a Parquet table committed atomically with its key in the schema metadata."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import resume


def test_a_parquet_unit_carries_its_key_and_nothing_else_changes(tmp_path):
    table = pa.table({"frame": [0, 1, 2], "value": [0.5, 1.5, 2.5]})
    path = tmp_path / "video1.parquet"
    resume.commit_parquet(table, path, "abc123")
    assert resume.parquet_key(path) == "abc123"
    assert pq.read_table(path).equals(table.replace_schema_metadata(pq.read_table(path).schema.metadata))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video1.parquet"]  # no staging file left
    first = path.read_bytes()
    resume.commit_parquet(table, path, "abc123")
    assert path.read_bytes() == first  # deterministic: no time in the file


def test_files_without_a_key_are_not_done(tmp_path):
    assert resume.parquet_key(tmp_path / "absent.parquet") is None
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    assert resume.parquet_key(tmp_path / "plain.parquet") is None
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 half a file")
    assert resume.parquet_key(tmp_path / "torn.parquet") is None
