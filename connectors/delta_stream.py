"""The Parquet files of one streamed Delta append (`DeltaTables.append_stream`): written locally with
pyarrow, gathered into row groups per partition value, uploaded through delta-rs's own filesystem, and
returned as the add actions of the one transaction that commits them."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction

ROW_GROUP_ROWS = 16_384  # rows per row group of every file the lake writes
STREAM_FILE_ROWS = 250_000  # rows per file of a streamed append
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass
class _Part:
    """One open file of a streamed append: its table path, local file, writer, rows written and the rows
    waiting to fill the next row group."""

    rel: str
    local: str
    writer: pq.ParquetWriter
    rows: int = 0
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0


class StreamFiles:
    """The Parquet files of one streamed append, written with pyarrow through delta-rs's own filesystem
    (so the same code writes to Blob Storage and to a local directory). Rows are gathered per partition
    value into row groups of ROW_GROUP_ROWS: a reader fetches a column in one request per row group, so
    the pieces a batch splits into by partition must not each become a row group."""

    def __init__(self, uri: str, options: Mapping[str, str], schema: pa.Schema, partition_by: str | None):
        if "://" not in uri:  # a local directory (tests): delta-rs's handler wants it to exist
            os.makedirs(uri, exist_ok=True)
        self.fs = pafs.PyFileSystem(DeltaStorageHandler(uri, dict(options)))
        self.partition_by = partition_by
        self.schema = schema if partition_by is None else schema.remove(schema.get_field_index(partition_by))
        self.open: dict[Any, _Part] = {}  # partition value -> its open file
        self.done: list[AddAction] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self.partition_by is None:
            self._write(None, pa.Table.from_batches([batch]))
            return
        column = batch.column(self.partition_by)
        for value in pc.unique(column).to_pylist():
            mask = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
            self._write(value, pa.Table.from_batches([batch.filter(mask)]).drop_columns([self.partition_by]))

    def _write(self, value: Any, table: pa.Table) -> None:
        part = self.open.get(value)
        if part is None:
            folder = "" if self.partition_by is None else f"{self.partition_by}={_partition_text(value)}/"
            local = tempfile.NamedTemporaryFile(prefix="delta-part-", suffix=".parquet", delete=False)  # noqa: SIM115
            local.close()
            writer = pq.ParquetWriter(local.name, self.schema, compression="snappy")
            part = self.open[value] = _Part(f"{folder}part-{uuid.uuid4().hex}.snappy.parquet", local.name, writer)
        part.pending.append(table.cast(self.schema) if table.schema != self.schema else table)
        part.pending_rows += table.num_rows
        if part.pending_rows >= ROW_GROUP_ROWS:
            self._flush(part)
        if part.rows >= STREAM_FILE_ROWS:
            self._finish(value)

    @staticmethod
    def _flush(part: _Part) -> None:
        if part.pending_rows:
            part.writer.write_table(pa.concat_tables(part.pending), row_group_size=max(part.pending_rows, 1))
            part.rows += part.pending_rows
            part.pending, part.pending_rows = [], 0

    def _finish(self, value: Any) -> None:
        """Close a file and upload it in large chunks (pyarrow writes many small pieces; through the Python
        filesystem adapter each would be a call of its own)."""
        part = self.open.pop(value)
        try:
            self._flush(part)
            part.writer.close()
            size = os.path.getsize(part.local)
            pafs.copy_files(
                part.local,
                part.rel,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=self.fs,
                chunk_size=UPLOAD_CHUNK_BYTES,
            )
        finally:
            os.unlink(part.local)
        parts = {} if self.partition_by is None else {self.partition_by: _partition_text(value)}
        stats = json.dumps({"numRecords": part.rows})
        self.done.append(AddAction(part.rel, size, parts, int(time.time() * 1000), True, stats))

    def close(self) -> list[AddAction]:
        for value in list(self.open):
            self._finish(value)
        return self.done

    def abort(self) -> None:
        """Drop what is open; files already uploaded are in no version, so `vacuum` removes them later."""
        for part in self.open.values():
            with contextlib.suppress(Exception):
                part.writer.close()
            with contextlib.suppress(OSError):
                os.unlink(part.local)
        self.open.clear()


def _partition_text(value: Any) -> str | None:
    return None if value is None else str(value)
