"""Each built-in filter on crafted samples with known verdicts and exact reasons (no database)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter, ValidationError

from service.filters.builtin import apply_filter
from service.filters.eval_sets import EvalSetError, read_eval_set
from service.filters.normalization import normalize_text
from service.filters.records import sample_record
from service.filters.specs import EvalSetSpec, FilterSpec

SPEC: TypeAdapter[Any] = TypeAdapter(FilterSpec)


def spec(type_: str, **params: Any) -> Any:
    return SPEC.validate_python({"type": type_, "params": params})


def test_normalization_ignores_case_whitespace_and_punctuation() -> None:
    assert normalize_text("  Hello,\tWORLD!!  ") == "hello world"
    assert normalize_text("a_b-c") == "a b c"
    assert normalize_text("Hello, World", punctuation=False) == "hello, world"


def test_length_in_chars_and_tokens() -> None:
    samples = [
        sample_record(1, "q", "short"),
        sample_record(2, "q", "a much longer answer here"),
        sample_record(3, "q", "mid size"),
    ]
    verdicts = apply_filter(spec("length", min=6, max=20), samples)
    assert verdicts[1].passed is False
    assert verdicts[1].reason == "answer has 5 chars, fewer than min 6"
    assert verdicts[2].reason == "answer has 25 chars, more than max 20"
    assert verdicts[3].passed is True
    assert verdicts[3].reason == "answer has 8 chars, within [6, 20]"
    assert verdicts[3].score == 8.0

    tokens = apply_filter(spec("length", unit="tokens", field="question_and_answer", max=4), samples)
    assert tokens[1].reason == "question+answer has 2 tokens, within [, 4]"
    assert tokens[2].reason == "question+answer has 6 tokens, more than max 4"


def test_length_with_a_real_tokenizer(tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    text = "The quick brown fox jumps over the lazy dog."
    expected = len(tokenizer.encode(text, add_special_tokens=False).ids)
    verdicts = apply_filter(
        spec("length", unit="tokens", min=expected, max=expected, tokenizer=str(tiny_model_dir)),
        [sample_record(1, "q", text)],
    )
    assert verdicts[1].passed
    assert verdicts[1].score == float(expected)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "set min, max or both"),
        ({"min": 5, "max": 2}, "min (5) is larger than max (2)"),
        ({"min": 1, "tokenizer": "x"}, "tokenizer only applies with unit=tokens"),
    ],
)
def test_length_params_are_validated(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        spec("length", **params)


def test_regex_include_and_exclude() -> None:
    samples = [
        sample_record(1, "q", "As an AI language model, I cannot."),
        sample_record(2, "q", "The answer is 4."),
    ]
    excluded = apply_filter(spec("regex", pattern=r"as an ai", ignore_case=True), samples)
    assert excluded[1].passed is False
    assert excluded[1].reason == "answer matches /as an ai/ at 'As an AI'"
    assert excluded[2].passed is True
    assert excluded[2].reason == "answer does not match /as an ai/"

    included = apply_filter(spec("regex", pattern=r"answer is \d+", mode="include"), samples)
    assert [included[1].passed, included[2].passed] == [False, True]


def test_regex_is_validated_at_submission() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression") as info:
        spec("regex", pattern="(unclosed")
    assert info.value.errors()[0]["loc"] == ("regex", "params", "pattern")


def test_exact_dedup_keeps_the_first_by_id_or_by_score() -> None:
    samples = [
        sample_record(10, "What is 2+2?", "Four.", score=3.0),
        sample_record(11, "what is 2 + 2", "four", score=9.0),
        sample_record(12, "What is 3+3?", "Six.", score=1.0),
        sample_record(13, "WHAT IS 2+2?!", "FOUR", score=None),
    ]
    by_id = apply_filter(spec("exact_dedup"), samples)
    # Punctuation becomes a space, so "2+2", "2 + 2" and "2+2?!" all normalise to "2 2": one text.
    assert by_id[10].passed
    assert by_id[10].reason == "first of its text"
    assert by_id[11].reason == "duplicate of sample 10"
    assert by_id[13].reason == "duplicate of sample 10"
    assert by_id[12].passed

    by_score = apply_filter(spec("exact_dedup", keep="highest_score"), samples)
    assert by_score[11].passed
    assert by_score[10].reason == "duplicate of sample 11"
    assert by_score[13].reason == "duplicate of sample 11"


def test_exact_dedup_respects_normalisation_flags() -> None:
    samples = [sample_record(1, "Hello", "World"), sample_record(2, "hello", "world")]
    strict = apply_filter(spec("exact_dedup", normalize={"case": False}), samples)
    assert strict[2].passed


PARAGRAPH = (
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide "
    "to produce glucose and oxygen. It takes place mainly in the chloroplasts of leaf cells, where "
    "chlorophyll absorbs light energy and drives the conversion."
)
PARAPHRASE = (
    "Photosynthesis is the process through which green plants use sunlight, water and carbon dioxide "
    "to make glucose and oxygen. It takes place mostly in the chloroplasts of leaf cells, where "
    "chlorophyll absorbs the light energy and drives the conversion."
)
UNRELATED = [
    "The French Revolution began in 1789 and ended the absolute monarchy of Louis XVI in France.",
    "A binary search tree keeps keys in sorted order so lookups take logarithmic time on average.",
    "Mitochondria are the organelles that produce most of the chemical energy of a cell as ATP.",
]


def test_near_dup_finds_a_paraphrase_and_not_unrelated_items() -> None:
    samples = [sample_record(100, "Explain photosynthesis.", PARAGRAPH)]
    samples += [sample_record(200 + i, "Tell me something.", text) for i, text in enumerate(UNRELATED)]
    samples.append(sample_record(300, "Explain photosynthesis.", PARAPHRASE))
    verdicts = apply_filter(spec("near_dup", threshold=0.5, field="answer"), samples)
    assert verdicts[100].passed
    assert all(verdicts[200 + i].passed for i in range(len(UNRELATED)))
    planted = verdicts[300]
    assert planted.passed is False
    assert planted.reason.startswith("near-duplicate of sample 100 (Jaccard 0.")
    assert planted.score is not None
    assert planted.score >= 0.5
    assert planted.reason.endswith(f"(Jaccard {planted.score:.2f})")


def test_near_dup_against_earlier_dataset_rows() -> None:
    def rows(dataset_ids: Any, field: str) -> list[tuple[str, str]]:
        assert list(dataset_ids) == [7]
        assert field == "answer"
        return [("dataset 'bio' v1 row 3", PARAGRAPH)]

    samples = [sample_record(1, "q", PARAPHRASE), sample_record(2, "q", UNRELATED[0])]
    verdicts = apply_filter(
        spec("near_dup", threshold=0.5, field="answer", against_datasets=[7]), samples, rows
    )
    assert verdicts[1].reason.startswith("near-duplicate of dataset 'bio' v1 row 3 (Jaccard ")
    assert verdicts[2].passed


def test_verifier_modes() -> None:
    def one(answer: str, reference: Any, **params: Any) -> Any:
        sample = sample_record(1, "q", answer, inputs={"reference": reference, "meta": {"gold": reference}})
        return apply_filter(spec("verifier", **params), [sample])[1]

    wrong = one("So the total is 61.", 62, mode="numeric")
    assert wrong.passed is False
    assert wrong.reason == "answer 61 ≠ reference 62"
    right = one("So the total is 1,234.50 dollars.", "1234.5", mode="numeric")
    assert right.passed
    assert right.reason == "answer 1234.5 = reference 1234.5"
    assert one("0.1000001", 0.1, mode="numeric", tolerance=1e-3).passed
    assert not one("0.11", 0.1, mode="numeric").passed
    assert one("no digits", 3, mode="numeric").reason == "no number in the answer 'no digits'"

    assert one("Paris", "Paris").passed
    assert one("  paris! ", "Paris").passed
    assert not one("  paris! ", "Paris", mode="exact").passed
    assert one("Lyon", "Paris").reason == "answer 'Lyon' ≠ reference 'Paris'"

    pattern = r"####\s*(.+)"
    assert one("work... #### 42", 42, mode="regex", pattern=pattern).reason == "answer 42 = reference 42"
    assert one("thinking #### Paris.", "paris", mode="regex", pattern=pattern).passed
    assert one("no marker", 42, mode="regex", pattern=pattern).reason == (
        "no final answer matching /####\\s*(.+)/ in the answer"
    )
    assert one("7", 7, reference_field="meta.gold", mode="numeric").passed

    missing = apply_filter(spec("verifier"), [sample_record(5, "q", "x")])[5]
    assert missing.passed is False
    assert missing.reason == "no reference in inputs['reference']"
    with pytest.raises(ValidationError, match="mode=regex needs a pattern"):
        spec("verifier", mode="regex")


def test_json_schema_validity() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    samples = [
        sample_record(1, "q", '{"age": 3}'),
        sample_record(2, "q", '{"age": "x"}'),
        sample_record(3, "q", "{age: 3}"),
        sample_record(4, "q", None),
    ]
    verdicts = apply_filter(spec("json_schema", schema=schema), samples)
    assert verdicts[1].passed
    assert verdicts[1].reason == "valid JSON matching the schema"
    assert verdicts[2].reason == "schema violation at $.age: 'x' is not of type 'integer'"
    assert verdicts[3].reason.startswith("answer is not valid JSON: Expecting property name")
    assert verdicts[4].reason == "no answer (the output parser failed)"
    assert apply_filter(spec("json_schema"), samples)[2].reason == "valid JSON"
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        spec("json_schema", schema={"type": "no-such-type"})


def test_judge_score_threshold() -> None:
    samples = [
        sample_record(1, "q", "a", score=3.0),
        sample_record(2, "q", "a", score=8.5),
        sample_record(3, "q", "a"),
    ]
    verdicts = apply_filter(spec("judge_score", min=4), samples)
    assert verdicts[1].reason == "score 3 < min 4"
    assert verdicts[2].passed
    assert verdicts[2].reason == "score 8.5 within [4, ]"
    assert verdicts[3].passed is False
    assert verdicts[3].reason == "no judge score"
    assert apply_filter(spec("judge_score", max=5, missing="pass"), samples)[3].passed


BENCHMARK_ITEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


def _write_eval_sets(tmp_path: Path) -> dict[str, Path]:
    rows = [
        {
            "id": "gsm-1",
            "question": "What is the boiling point of water at sea level in Celsius degrees exactly?",
        },
        {"id": "gsm-17", "question": BENCHMARK_ITEM},
        {"id": "short", "question": "Name the largest planet."},
    ]
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parquet = tmp_path / "eval.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    return {"jsonl": jsonl, "parquet": parquet}


def test_decontamination_catches_a_planted_benchmark_item(tmp_path: Path) -> None:
    paths = _write_eval_sets(tmp_path)
    planted = "Here is a word problem: " + BENCHMARK_ITEM.upper().replace(",", " ,") + " Think step by step."
    samples = [
        sample_record(1, planted, "72"),
        sample_record(2, "How many clips did Natalia sell?", "Some."),  # shares fewer than 13 words in a row
        sample_record(3, "Quick: name the largest planet!", "Jupiter"),  # the short item, matched whole
    ]
    for fmt, path in paths.items():
        verdicts = apply_filter(
            spec("decontamination", eval_sets=[{"path": str(path), "id_field": "id", "name": "gsm"}]), samples
        )
        assert verdicts[1].passed is False, fmt
        assert (
            "with eval item gsm#gsm-17 ('Natalia sold clips to 48 of her friends in April,"
            in verdicts[1].reason
        )
        assert verdicts[1].reason.startswith("19 shared n-grams (n=13)")
        assert verdicts[2].passed, fmt
        assert verdicts[2].reason == "no 13-gram overlap with 3 eval items"
        assert verdicts[3].passed is False
        assert (
            verdicts[3].reason
            == "1 shared n-gram (n=13) with eval item gsm#short ('Name the largest planet.')"
        )


def test_decontamination_reads_hf_folders(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "hf"
    DatasetDict(
        {
            "test": Dataset.from_list([{"problem": BENCHMARK_ITEM}]),
            "train": Dataset.from_list([{"problem": "x y z"}]),
        }
    ).save_to_disk(str(folder))
    items = list(read_eval_set(EvalSetSpec(path=str(folder), fields=["problem"], split="test")))
    assert [(i.label, i.text) for i in items] == [("hf#0", BENCHMARK_ITEM)]
    verdicts = apply_filter(
        spec("decontamination", eval_sets=[{"path": str(folder / "test"), "fields": ["problem"]}]),
        [sample_record(1, BENCHMARK_ITEM, "72")],
    )
    assert verdicts[1].reason.startswith("19 shared n-grams (n=13) with eval item test#0")


def test_eval_set_errors_name_the_problem(tmp_path: Path) -> None:
    paths = _write_eval_sets(tmp_path)
    with pytest.raises(EvalSetError, match="has no field 'problem'"):
        list(read_eval_set(EvalSetSpec(path=str(paths["jsonl"]), fields=["problem"])))
    with pytest.raises(EvalSetError, match="no such file or folder"):
        list(read_eval_set(EvalSetSpec(path=str(tmp_path / "missing.jsonl"))))


def test_near_dup_signatures_are_datasketch_minhashes() -> None:
    """The chunk-vectorised signatures equal datasketch's own MinHash over the same shingle hashes."""
    import numpy as np
    from datasketch import MinHash

    from service.filters.builtin.near_dup import NearDuplicates, chunk_shingle_hashes
    from service.filters.specs import NearDupParams

    texts = [PARAGRAPH, PARAPHRASE, "", "abc", *UNRELATED]
    for unit, size in (("char", 5), ("word", 3)):
        params = NearDupParams(shingle=unit, shingle_size=size, num_perm=64)
        signatures = NearDuplicates(params).signatures(texts)
        owners, hashes = chunk_shingle_hashes(texts, unit, size)
        assert signatures[2] is None
        for i, signature in enumerate(signatures):
            if signature is None:
                continue
            expected = MinHash(num_perm=64, seed=1, hashfunc=int)
            expected.update_batch(hashes[owners == i].tolist())
            assert np.array_equal(signature, expected.hashvalues)


def test_judge_score_with_a_judge_pass_uses_the_scorer() -> None:
    from service.filters.builtin import build_filter

    replies = {
        1: (7.0, None),
        2: (2.0, None),
        3: (None, "judge reply 'hmm': no number in the judge's completion"),
    }

    def scorer(samples: Any) -> list[tuple[float | None, str | None]]:
        return [replies[s["id"]] for s in samples]

    judged = spec(
        "judge_score",
        min=5,
        judge={
            "teacher": {"model": "/models/judge"},
            "messages": [{"role": "user", "content": "{{ answer }}"}],
        },
    )
    verdicts = build_filter(judged, judge_scorer=scorer).evaluate(
        [sample_record(i, "q", "a") for i in (1, 2, 3)]
    )
    assert [(v.passed, v.reason, v.score) for v in verdicts] == [
        (True, "judge score 7 within [5, ]", 7.0),
        (False, "judge score 2 < min 5", 2.0),
        (False, "judge reply 'hmm': no number in the judge's completion", None),
    ]
    with pytest.raises(ValueError, match="needs a teacher"):
        build_filter(judged)
