"""The loss-mask pre-flight on SmolLM2's own chat template: no `{% generation %}` markers and a default
system prompt the template adds when a conversation has none. TRL's own tokenization must train
exactly the answer and its end of turn, never the system prompt (default or given) or the user turn.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from trainer.config import build_sft_config
from trainer.preflight import IGNORE, MaskError, check_completion_mask
from trainer.spec import TrainingSpec

pytestmark = pytest.mark.slow

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ROWS = [
    {
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "completion": [{"role": "assistant", "content": "The capital of France is Paris."}],
    },
    {
        "prompt": [
            {"role": "system", "content": "Answer with a number only."},
            {"role": "user", "content": "What is 3 + 11?"},
        ],
        "completion": [{"role": "assistant", "content": "14"}],
    },
]
# SmolLM2's template, but the default system turn is rendered after the conversation when it ends
# with an answer: every prompt text check passes, and the system prompt would be trained.
SYSTEM_AFTER_ANSWER = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if messages[-1]['role'] == 'assistant' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}{% endif %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def real_tokenizer(real_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_model_dir))


def test_the_mask_trains_exactly_the_answer_on_smollm2s_template(real_tokenizer: Any, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl.chat_template_utils import has_generation_markers

    assert not has_generation_markers(real_tokenizer.chat_template)
    assert DEFAULT_SYSTEM in real_tokenizer.chat_template
    assert real_tokenizer.eos_token == "<|im_end|>"

    report = check_completion_mask(
        real_tokenizer, Dataset.from_list(ROWS), build_sft_config(TrainingSpec(max_length=128), tmp_path)
    )
    # The answer, its end-of-turn token and the newline ChatML puts after it: nothing else.
    assert [mask.trained_text for mask in report.rows] == [
        row["completion"][0]["content"] + "<|im_end|>\n" for row in ROWS
    ]
    for mask, row in zip(report.rows, ROWS, strict=True):
        answer_tokens = real_tokenizer(row["completion"][0]["content"], add_special_tokens=False)["input_ids"]
        assert mask.trained_tokens == len(answer_tokens) + 2  # + <|im_end|> + "\n"
        assert mask.ignored_tokens > mask.trained_tokens
    assert report.stop_token_trained
    assert report.warnings == []

    # The ignored part is the whole prompt: the default system prompt where the row has none, the
    # row's own system prompt where it has one, the user turn and the assistant header.
    rendered = [
        real_tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        for row in ROWS
    ]
    assert DEFAULT_SYSTEM in rendered[0]
    assert DEFAULT_SYSTEM not in rendered[1]
    assert "Answer with a number only." in rendered[1]
    for row, prompt_text, mask in zip(ROWS, rendered, report.rows, strict=True):
        prompt_ids = real_tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        assert mask.ignored_tokens == len(prompt_ids)
        assert row["prompt"][-1]["content"] not in mask.trained_text


def test_trls_labels_match_the_report(real_tokenizer: Any, tmp_path: Path) -> None:
    """The same rows through SFTTrainer's own dataset preparation: labels are -100 up to the answer."""
    from datasets import Dataset

    from trainer.preflight import _ArgsView, _TrainerView, _trl_prepare

    config = build_sft_config(TrainingSpec(max_length=128), tmp_path)
    prepared = _trl_prepare(
        _TrainerView(real_tokenizer, None, completion_only_loss=True),
        Dataset.from_list(ROWS),
        real_tokenizer,
        _ArgsView(config, shuffle_dataset=False, dataset_num_proc=None),
        packing=False,
    )
    for example, row in zip(prepared, ROWS, strict=True):
        pairs = list(zip(example["input_ids"], example["labels"], strict=True))
        trained = [token for token, label in pairs if label != IGNORE]
        ignored = [token for token, label in pairs if label == IGNORE]
        assert trained == [label for _, label in pairs if label != IGNORE], "labels are the input tokens"
        assert real_tokenizer.decode(trained) == row["completion"][0]["content"] + "<|im_end|>\n"
        assert ignored == [token for token, _ in pairs[: len(ignored)]], "one prompt span, then the answer"
        prompt = real_tokenizer.decode(ignored)
        assert row["prompt"][-1]["content"] in prompt
        assert (DEFAULT_SYSTEM in prompt) == (row["prompt"][0]["role"] != "system")


def test_a_template_that_trains_its_default_system_prompt_is_refused(
    real_tokenizer: Any, tmp_path: Path
) -> None:
    from datasets import Dataset

    tokenizer = copy.deepcopy(real_tokenizer)
    tokenizer.chat_template = SYSTEM_AFTER_ANSWER
    with pytest.raises(MaskError, match=r"row 0: text that is not the answer is trained \('system\\nYou are"):
        check_completion_mask(
            tokenizer, Dataset.from_list(ROWS), build_sft_config(TrainingSpec(max_length=128), tmp_path)
        )
