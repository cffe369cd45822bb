"""Tiny models: built locally, loaded by transformers, shapes validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.tiny_model import IM_END, TinyModelSpec, build_tiny_model, read_tiny_model_info


def test_tiny_model_builds_and_loads_in_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("What is 12+30? 42. The answer is a number.\n" * 50)
    out = build_tiny_model(
        tmp_path / "tiny", TinyModelSpec(layers=1, hidden=32, heads=2, vocab=300), corpus_files=[corpus]
    )

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    info = read_tiny_model_info(out)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.config.num_hidden_layers == 1
    assert model.config.hidden_size == 32
    assert tokenizer.eos_token == IM_END
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)
    rendered: str = tokenizer.apply_chat_template(  # type: ignore[assignment]
        [{"role": "user", "content": "What is 1+2?"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    # Split digits: every digit is its own token, so arithmetic is learnable.
    assert len(tokenizer("12345", add_special_tokens=False)["input_ids"]) == 5
    assert not list(tmp_path.glob(".tiny.*")), "the staging folder is renamed, not left behind"


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"hidden": 100, "heads": 3}, "multiple of heads"),
        ({"hidden": 12, "heads": 4}, "even head size"),
        ({"vocab": 100}, "vocab must be"),
        ({"layers": 0}, "layers must be"),
        ({"max_position": 4}, "max_position"),
    ],
)
def test_tiny_model_spec_refuses_bad_shapes(shapes: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TinyModelSpec(**shapes)  # type: ignore[arg-type]


def test_tiny_model_spec_from_dict_refuses_unknown_keys() -> None:
    assert TinyModelSpec.from_dict({"layers": 2, "hidden": 64}).layers == 2
    with pytest.raises(ValueError, match="unknown tiny-model key"):
        TinyModelSpec.from_dict({"layers": 2, "width": 64})
