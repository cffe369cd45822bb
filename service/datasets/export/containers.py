"""Containers: where formatted batches go — JSONL, Parquet, or an HF `save_to_disk` folder.

The HF folder is written with pyarrow in the layout `datasets.DatasetDict.save_to_disk` uses
(`dataset_dict.json`, and per split an Arrow IPC stream `data-00000-of-00001.arrow`, `state.json`
and `dataset_info.json`), so `datasets.load_from_disk` reads it and the API never imports
`datasets`. Features are left to `datasets` to infer from the Arrow schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

CONTAINERS = ("jsonl", "parquet", "hf")
HF_SHARD = "data-00000-of-00001.arrow"


class SplitWriter(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


def jsonl_bytes(batch: pa.RecordBatch) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist()).encode("utf-8")


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")

    def write(self, batch: pa.RecordBatch) -> None:
        self.file.write(jsonl_bytes(batch))

    def close(self) -> None:
        self.file.close()


class ParquetFileWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.writer = pq.ParquetWriter(str(path), schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()


class HfSplitWriter:
    """One split of a `save_to_disk` DatasetDict folder."""

    def __init__(
        self, folder: Path, split: str, schema: pa.Schema, fingerprint: str, description: str
    ) -> None:
        self.folder = folder
        self.split = split
        self.fingerprint = fingerprint
        self.description = description
        folder.mkdir(parents=True, exist_ok=True)
        self.sink = pa.OSFile(str(folder / HF_SHARD), "wb")
        self.writer = pa.ipc.new_stream(self.sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.sink.close()
        state: dict[str, Any] = {
            "_data_files": [{"filename": HF_SHARD}],
            "_fingerprint": self.fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": self.split,
        }
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        info = {"citation": "", "description": self.description, "homepage": "", "license": ""}
        (self.folder / "dataset_info.json").write_text(json.dumps(info, indent=2))


def write_dataset_dict_json(folder: Path, splits: list[str]) -> None:
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}))


def split_file(container: str, split: str) -> str:
    """Where a split lands inside the export folder."""
    if container == "jsonl":
        return f"{split}.jsonl"
    if container == "parquet":
        return f"{split}.parquet"
    return f"{split}/{HF_SHARD}"


class _ChunkSink:
    """A write-only file object that hands out what was written so far (for streamed Parquet)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def parquet_stream(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[bytes]:
    """A Parquet file as a byte stream: one row group per batch, the footer at the end."""
    sink = _ChunkSink()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for batch in batches:
            writer.write_batch(batch)
            data = sink.drain()
            if data:
                yield data
    finally:
        writer.close()
    yield sink.drain()


def jsonl_stream(batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    for batch in batches:
        yield jsonl_bytes(batch)
