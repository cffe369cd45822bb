"""The mask pre-flight: TRL's own tokenization of a few rows proves the loss covers the answers only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.trainer_factories import addition_rows
from trainer.config import build_sft_config
from trainer.preflight import MaskError, check_completion_mask
from trainer.spec import TrainingSpec

# Renders only the prompt turns: the answer is dropped, so nothing would be trained.
DROPS_ANSWER = (
    "{{- bos_token }}{%- for m in messages %}{%- if m['role'] != 'assistant' %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Renders the assistant turn first: the prompt alone is no longer a prefix, so TRL would train the question.
ANSWER_BEFORE_PROMPT = (
    "{{- bos_token }}{%- for m in messages | sort(attribute='role') %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Ends the assistant turn without the end-of-turn token: trainable, but the student never learns to stop.
NO_STOP_TOKEN = (
    "{{- bos_token }}{%- for m in messages %}{%- if m['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' + m['content'] + '\\n' }}{%- else %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _rows(count: int = 4) -> Any:
    from datasets import Dataset

    return Dataset.from_list(addition_rows(count))


def _tokenizer_with(tokenizer: Any, template: str | None) -> Any:
    broken = copy.deepcopy(tokenizer)
    broken.chat_template = template
    return broken


def test_mask_trains_exactly_the_answers(tiny_tokenizer: Any, tmp_path: Path) -> None:
    rows = _rows()
    report = check_completion_mask(
        tiny_tokenizer, rows, build_sft_config(TrainingSpec(max_length=64), tmp_path)
    )
    assert [mask.trained_text for mask in report.rows] == [
        row["completion"][0]["content"] + "<|im_end|>\n" for row in rows
    ]
    assert all(mask.ignored_tokens > mask.trained_tokens > 0 for mask in report.rows)
    assert report.stop_token_trained
    assert report.warnings == []
    assert "answers only" in report.summary()


@pytest.mark.parametrize("strategy", ["wrapped", "bfd"])
def test_mask_holds_with_packing(tiny_tokenizer: Any, tmp_path: Path, strategy: str) -> None:
    config = build_sft_config(
        TrainingSpec(max_length=48, packing=True), tmp_path, {"packing_strategy": strategy}
    )
    report = check_completion_mask(tiny_tokenizer, _rows(6), config, n_rows=6)
    assert report.packing
    assert report.packed_sequences >= 2  # six ~29-token rows do not fit in one 48-token pack
    assert sum(mask.trained_tokens for mask in report.rows) > 0


def test_template_that_drops_the_answer_is_refused(tiny_tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(MaskError, match="row 0: the chat template drops the answer"):
        check_completion_mask(
            _tokenizer_with(tiny_tokenizer, DROPS_ANSWER), _rows(), build_sft_config(TrainingSpec(), tmp_path)
        )


def test_template_that_renders_the_answer_inside_the_prompt_is_refused(
    tiny_tokenizer: Any, tmp_path: Path
) -> None:
    with pytest.raises(MaskError, match=r"row 0: prompt text \(user: 'What is .*'\) is trained"):
        check_completion_mask(
            _tokenizer_with(tiny_tokenizer, ANSWER_BEFORE_PROMPT),
            _rows(),
            build_sft_config(TrainingSpec(), tmp_path),
        )


def test_max_length_that_cuts_off_the_answer_is_refused(tiny_tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(MaskError, match="max_length=12 cuts off the whole answer"):
        check_completion_mask(
            tiny_tokenizer, _rows(), build_sft_config(TrainingSpec(max_length=12), tmp_path)
        )


def test_missing_template_and_full_sequence_loss_are_refused(tiny_tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(MaskError, match="no chat template"):
        check_completion_mask(
            _tokenizer_with(tiny_tokenizer, None), _rows(), build_sft_config(TrainingSpec(), tmp_path)
        )
    with pytest.raises(MaskError, match="completion_only_loss=False"):
        check_completion_mask(
            tiny_tokenizer,
            _rows(),
            build_sft_config(TrainingSpec(), tmp_path, {"completion_only_loss": False}),
        )


def test_untrained_stop_token_is_a_warning(tiny_tokenizer: Any, tmp_path: Path) -> None:
    report = check_completion_mask(
        _tokenizer_with(tiny_tokenizer, NO_STOP_TOKEN), _rows(), build_sft_config(TrainingSpec(), tmp_path)
    )
    assert not report.stop_token_trained
    assert any("may not learn to stop" in warning for warning in report.warnings)


def test_max_length_that_cuts_part_of_the_answer_is_refused_unless_packing_keeps_it(
    tiny_tokenizer: Any, tmp_path: Path
) -> None:
    from datasets import Dataset

    prompt = [{"role": "user", "content": "What is 40+2? Explain."}]
    answer = "The answer is 42, because 40 plus 2 makes 42."
    rows = Dataset.from_list([{"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}])
    rendered = tiny_tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    max_length = len(tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"]) + 3  # 3 answer tokens
    with pytest.raises(MaskError, match=rf"row 0: max_length={max_length} cuts the answer"):
        check_completion_mask(
            tiny_tokenizer, rows, build_sft_config(TrainingSpec(max_length=max_length), tmp_path)
        )
    # Wrapped packing keeps every token: the rest of the answer is trained in the next pack.
    packed = build_sft_config(TrainingSpec(max_length=max_length, packing=True), tmp_path)
    assert check_completion_mask(tiny_tokenizer, rows, packed).rows[0].trained_text.startswith(answer)
