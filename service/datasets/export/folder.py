"""Writing a whole export into a folder: every split, in one format and container, and the card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from service.datasets.export.card import DatasetManifest, dataset_card
from service.datasets.export.containers import (
    HfSplitWriter,
    JsonlWriter,
    ParquetFileWriter,
    SplitWriter,
    write_dataset_dict_json,
)
from service.datasets.export.formats import format_batch, format_schema
from service.datasets.export.rows import DEFAULT_BATCH_BYTES, flat_batches, has_system, split_sizes


def export_to_folder(
    engine: Engine,
    manifest: DatasetManifest,
    fmt: str,
    container: str,
    out_dir: Path,
    *,
    on_rows: Callable[[int], None] | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> dict[str, int]:
    """Write the version into `out_dir` (created); returns rows per split. `on_rows(n)` reports progress."""
    with engine.connect() as conn:
        splits = split_sizes(conn, manifest.id)
        with_system = has_system(conn, manifest.id)
    schema = format_schema(fmt, has_system=with_system)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        writer: SplitWriter
        if container == "jsonl":
            writer = JsonlWriter(out_dir / f"{split}.jsonl")
        elif container == "parquet":
            writer = ParquetFileWriter(out_dir / f"{split}.parquet", schema)
        elif container == "hf":
            fingerprint = f"{manifest.digest[:12]}{fmt[:2]}{split}"
            description = f"hardlabel dataset {manifest.name} v{manifest.version} ({fmt})"
            writer = HfSplitWriter(out_dir / split, split, schema, fingerprint, description)
        else:
            raise ValueError(f"unknown container {container!r}")
        try:
            for batch in flat_batches(engine, manifest.id, split, batch_bytes):
                writer.write(format_batch(batch, fmt, has_system=with_system))
                if on_rows is not None:
                    on_rows(batch.num_rows)
        finally:
            writer.close()
    if container == "hf":
        write_dataset_dict_json(out_dir, list(splits))
    (out_dir / "README.md").write_text(dataset_card(manifest, fmt, container, splits), encoding="utf-8")
    return splits
