"""Writing a whole export into a folder: every split, in one format and container, and the card."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
from sqlalchemy import Engine

from service.datasets.export.card import DatasetManifest, dataset_card
from service.datasets.export.containers import (
    HfSplitWriter,
    JsonlWriter,
    ParquetFileWriter,
    SplitWriter,
    write_dataset_dict_json,
)
from service.datasets.export.formats import check_soft_labels, format_batch, format_schema
from service.datasets.export.preference import PreferenceStats, pair_batches, preference_stats
from service.datasets.export.rows import DEFAULT_BATCH_BYTES, flat_batches, has_system, split_sizes


class NoPreferencePairs(ValueError):
    """A preference export of a version in which no prompt has a pair."""


def export_plan(
    engine: Engine, manifest: DatasetManifest, fmt: str
) -> tuple[dict[str, int], bool, PreferenceStats | None]:
    """What an export of `fmt` writes: rows (pairs, for `preference`) per non-empty split, whether
    some row has a system prompt, and the preference statistics.

    Raises:
        NoPreferencePairs: a `preference` export would be empty.
    """
    with engine.connect() as conn:
        splits = split_sizes(conn, manifest.id)
        with_system = has_system(conn, manifest.id)
    if fmt != "preference":
        return splits, with_system, None
    stats = preference_stats(engine, manifest.id, manifest.lineage, manifest.query)
    if not stats.total_pairs:
        prompts = sum(stats.prompts.values())
        raise NoPreferencePairs(
            f"dataset version {manifest.id} has no preference pairs: none of its {prompts:,} prompts has "
            "a second answer that a reviewer rejected or that a judge scored lower"
        )
    return {s: n for s, n in stats.pairs.items() if n}, with_system, stats


def plan_card(
    manifest: DatasetManifest,
    fmt: str,
    container: str,
    plan: tuple[dict[str, int], bool, PreferenceStats | None],
    *,
    provenance: bool,
    soft_labels: bool,
) -> str:
    """The README.md card of an export that `export_plan` planned (what the folder and /card carry)."""
    splits, with_system, stats = plan
    return dataset_card(
        manifest,
        fmt,
        container,
        splits,
        provenance=provenance,
        has_system=with_system,
        preference=stats,
        soft_labels=soft_labels,
    )


def export_batches(
    engine: Engine,
    manifest: DatasetManifest,
    fmt: str,
    split: str,
    *,
    has_system: bool,
    provenance: bool = False,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    soft_labels: bool = False,
) -> Iterator[pa.RecordBatch]:
    """One split of the version in format `fmt`, as Arrow batches of format_schema(fmt, …).

    Raises:
        SoftLabelsUnsupported: `soft_labels` with the preference format.
    """
    check_soft_labels(fmt, soft_labels)
    return _export_batches(engine, manifest, fmt, split, has_system, provenance, batch_bytes, soft_labels)


def _export_batches(
    engine: Engine,
    manifest: DatasetManifest,
    fmt: str,
    split: str,
    has_system: bool,
    provenance: bool,
    batch_bytes: int,
    soft_labels: bool,
) -> Iterator[pa.RecordBatch]:
    if fmt == "preference":
        source = pair_batches(
            engine,
            manifest.id,
            manifest.lineage,
            manifest.query,
            split,
            batch_bytes,
            provenance=provenance,
        )
    else:
        source = flat_batches(
            engine, manifest.id, split, batch_bytes, provenance=provenance, soft_labels=soft_labels
        )
    for batch in source:
        yield format_batch(batch, fmt, has_system=has_system, provenance=provenance, soft_labels=soft_labels)


def export_to_folder(
    engine: Engine,
    manifest: DatasetManifest,
    fmt: str,
    container: str,
    out_dir: Path,
    *,
    on_rows: Callable[[int], None] | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    provenance: bool = False,
    soft_labels: bool = False,
) -> dict[str, int]:
    """Write the version into `out_dir` (created); returns rows (pairs, for `preference`) per split.

    `on_rows(n)` reports progress. With `provenance`, every row also carries `sample_id`, `job_id`,
    `teacher` and `item_index` (see formats.py). With `soft_labels`, every row also carries
    `completion_token_ids`, `teacher_topk_ids` and `teacher_topk_logprobs` (see soft_labels.py).

    Raises:
        NoPreferencePairs: `fmt` is `preference` and no prompt of the version has a pair.
        SoftLabelsUnsupported: `soft_labels` with the preference format.
    """
    check_soft_labels(fmt, soft_labels)
    plan = export_plan(engine, manifest, fmt)
    splits, with_system, _ = plan
    schema = format_schema(fmt, has_system=with_system, provenance=provenance, soft_labels=soft_labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        writer: SplitWriter
        if container == "jsonl":
            writer = JsonlWriter(out_dir / f"{split}.jsonl")
        elif container == "parquet":
            writer = ParquetFileWriter(out_dir / f"{split}.parquet", schema)
        elif container == "hf":
            tag = "pf" if fmt == "preference" else fmt[:2]  # "pr" is prompt_completion's
            fingerprint = (
                f"{manifest.digest[:12]}{tag}{split}{'pv' if provenance else ''}{'sl' if soft_labels else ''}"
            )
            description = f"hardlabel dataset {manifest.name} v{manifest.version} ({fmt})"
            writer = HfSplitWriter(out_dir / split, split, schema, fingerprint, description)
        else:
            raise ValueError(f"unknown container {container!r}")
        try:
            for batch in export_batches(
                engine,
                manifest,
                fmt,
                split,
                has_system=with_system,
                provenance=provenance,
                batch_bytes=batch_bytes,
                soft_labels=soft_labels,
            ):
                writer.write(batch)
                if on_rows is not None:
                    on_rows(batch.num_rows)
        finally:
            writer.close()
    if container == "hf":
        write_dataset_dict_json(out_dir, list(splits))
    card = plan_card(manifest, fmt, container, plan, provenance=provenance, soft_labels=soft_labels)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return splits
