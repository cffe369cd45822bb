"""The dataset card (README.md) written beside exported data: what it is, how to load it, where it
came from. Its YAML header lists the data files per split, so `datasets.load_dataset(folder)`
finds the splits of a JSONL or Parquet export by itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from service.datasets.export.containers import split_file
from service.datasets.export.formats import format_schema
from service.datasets.export.preference import PAIRING_RULE, PreferenceStats

LOADERS = {
    "jsonl": 'load_dataset("json", data_files={{"train": "{dir}/train.jsonl"}})',
    "parquet": 'load_dataset("parquet", data_files={{"train": "{dir}/train.parquet"}})',
    "hf": 'load_from_disk("{dir}")',
}
FORMAT_TEXT = {
    "prompt_completion": "TRL conversational prompt–completion: `prompt` (system?, user) and `completion` "
    "(assistant); `trl.SFTTrainer` trains on the completion only.",
    "messages": "Conversations in `messages` (system?, user, assistant).",
    "alpaca": "Alpaca: `instruction` (the question), `input` (empty), `output` (the answer).",
    "preference": "TRL conversational preference: `prompt` (system?, user), `chosen` and `rejected` "
    "(assistant); for `trl.DPOTrainer` and other preference trainers.",
}
PROVENANCE_TEXT = (
    "- **Provenance columns**: `source` (`teacher` or `ground_truth`), `sample_id` (the hardlabel "
    "sample), `job_id` (its generation job), `teacher` (the job's teacher model), `item_index` (the "
    "seed item it answers). A ground-truth row has no sample or teacher (null); one taken from the "
    "seed data names the job and item its reference came from."
)


@dataclass(frozen=True)
class DatasetManifest:
    """What an export needs to know about a version (read from its row)."""

    id: int
    name: str
    version: int
    digest: str
    row_counts: dict[str, Any]
    lineage: dict[str, Any]
    query: dict[str, Any]
    created_at: datetime


SOFT_LABELS_TEXT = (
    "- **Soft labels**: `completion_token_ids` are the answer's tokens as the teacher generated them "
    "(its end-of-turn token included); `teacher_topk_ids` and `teacher_topk_logprobs` hold, per "
    "completion token, the teacher's k most likely tokens and their log-probabilities (float16 "
    "precision; -1 pads). Null where a row has none (ground truth, no `logprobs` asked, an edited "
    "answer). For same-tokenizer distillation only."
)


def dataset_card(
    manifest: DatasetManifest,
    fmt: str,
    container: str,
    splits: dict[str, int],
    *,
    provenance: bool = False,
    has_system: bool = False,
    preference: PreferenceStats | None = None,
    soft_labels: bool = False,
) -> str:
    """The card; `splits` are the rows (pairs, for `preference`) per split written."""
    header: dict[str, Any] = {
        "pretty_name": f"{manifest.name} v{manifest.version}",
        "tags": ["hardlabel", "distillation"],
    }
    if container != "hf":
        header["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": split_file(container, split)} for split in splits],
            }
        ]
    lineage = manifest.lineage
    columns = format_schema(fmt, has_system=has_system, provenance=provenance, soft_labels=soft_labels).names
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {manifest.name} v{manifest.version}",
        "",
        f"A frozen hardlabel dataset version (id {manifest.id}), created {manifest.created_at.isoformat()}.",
        "",
        f"- **Format**: {FORMAT_TEXT[fmt]}",
        "- **Columns**: " + ", ".join(f"`{name}`" for name in columns),
        ("- **Pairs**: " if fmt == "preference" else "- **Rows**: ")
        + (", ".join(f"{split} {n:,}" for split, n in splits.items()) or "none"),
        f"- **Content digest** (sha256): `{manifest.digest}`",
        f"- **Load**: `{LOADERS[container].format(dir='.')}`",
    ]
    if provenance:
        lines.append(PROVENANCE_TEXT)
        if fmt == "preference":
            lines.append(
                "  In a pair they are the chosen answer's; `rejected_sample_id` is the rejected one's sample."
            )
    if soft_labels:
        lines.append(SOFT_LABELS_TEXT)
    if preference is not None:
        lines += ["", "## Preference pairs", "", PAIRING_RULE, ""]
        for split, prompts in preference.prompts.items():
            pairs = preference.pairs.get(split, 0)
            by_review = preference.by_review.get(split, 0)
            lines.append(
                f"- {split}: {pairs:,} pairs of {prompts:,} prompts ({prompts - pairs:,} skipped without a "
                f"pair); rejected by review {by_review:,}, by judge score {pairs - by_review:,}"
            )
    ground_truth = lineage.get("ground_truth")
    if ground_truth:
        lines += ["", *ground_truth_section(ground_truth, manifest.row_counts)]
    lines += [
        "",
        "## Lineage",
        "",
    ]
    for job in lineage.get("jobs", []):
        recipe = job.get("recipe", {})
        teachers = job.get("teachers") or [job.get("teacher", {})]
        named = ", ".join(f"`{teacher.get('model')}`" for teacher in teachers)
        lines.append(
            f"- job {job.get('id')}: recipe {recipe.get('name')!s} v{recipe.get('version')!s}, "
            f"{'teachers' if len(teachers) > 1 else 'teacher'} {named}, {job.get('rows', 0):,} rows"
        )
    for run in lineage.get("filter_runs", []):
        names = ", ".join(f.get("name") or f.get("type", "?") for f in run.get("filters") or [])
        lines.append(f"- filter run {run.get('id')}: {names}")
    reviews = lineage.get("review_counts", {})
    if reviews:
        lines.append(
            "- review status of teacher rows: " + ", ".join(f"{k} {v:,}" for k, v in sorted(reviews.items()))
        )
    lines += [
        "",
        "<details><summary>Full lineage and query (JSON)</summary>",
        "",
        "```json",
        json.dumps({"query": manifest.query, "lineage": lineage}, indent=2, ensure_ascii=False, default=str),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def _ratio(value: Any) -> str:
    return f"{value} ({float(value):.1%})" if isinstance(value, int | float) else "n/a"


def ground_truth_section(ground_truth: dict[str, Any], row_counts: dict[str, Any]) -> list[str]:
    """The card's statement of the blend: the stated and actual ratio, and where ground truth came from."""
    rows = int(ground_truth.get("rows") or 0)
    train = int(row_counts.get("train") or 0)
    stated = ground_truth.get("requested_ratio")
    actual = ground_truth.get("actual_ratio")
    lines = [
        "## Ground truth",
        "",
        f"The train split blends ground truth with the teacher's labels: {rows:,} of its {train:,} rows are "
        f"ground truth, {train - rows:,} the teacher's. Every row's `source` (`teacher` or `ground_truth`) "
        "says which; the test split holds teacher rows only.",
        "",
        "- **Stated ratio**: "
        + (_ratio(stated) if stated is not None else "none (every available ground-truth row is used)"),
        f"- **Actual ratio** in the train split: {_ratio(actual)}",
    ]
    available = ground_truth.get("available")
    if stated is not None and rows < round((train - rows) * float(stated) / (1 - float(stated))):
        lines.append(f"  (below the stated ratio: only {rows:,} ground-truth rows were available)")
    origin = ground_truth.get("from")
    if origin == "seed_field":
        field = ground_truth.get("from_seed_field")
        lines.append(
            f"- **From**: the seed data of this version's own items: the reference in `inputs.{field}` is "
            f"the answer to the item's question ({available or 0:,} items available to train; "
            f"{ground_truth.get('held_out_items', 0):,} held out because the test split asks them)"
        )
    else:
        kind = "an uploaded JSONL file" if origin == "upload" else "records given with the request"
        lines.append(
            f"- **From**: {kind} of {available or 0:,} question/answer records "
            f"(sha256 `{ground_truth.get('records_sha256', '?')}`)"
        )
    if ground_truth.get("choice"):
        lines.append(f"- **Chosen**: {ground_truth['choice']}")
    return lines
