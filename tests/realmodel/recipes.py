"""The recipes the real-model group runs: small, with short max_tokens and stop strings (SmolLM2 rambles)."""

from __future__ import annotations

from typing import Any

# Capitals a 135M model mostly knows: the verifier filter keeps the ones it gets right.
CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Norway": "Oslo",
    "Kenya": "Nairobi",
    "Peru": "Lima",
}
# The verifier reads the city out of the model's sentence ("The capital of France is Paris.").
CITY_PATTERN = r"\bis ([A-Z][a-z]+)"
# Countries the OpenAI-server job asks (the same prompts, fewer of them).
SERVED_COUNTRIES = 6
# A seed row whose prompt is longer than the teacher's context: a failed sample, not a failed job.
TOO_LONG_COUNTRY = "the country " * 600
CAPITAL_SYSTEM = "Answer with the name of the city only."
# A record is ~16-29 tokens; bounded strings and room for odd ones (a Cyrillic name is a token a
# letter) so that structured outputs finish the object instead of being cut by max_tokens.
RECORD_MAX_CHARS = 24
RECORD_MAX_TOKENS = 64
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "country": {"type": "string", "maxLength": RECORD_MAX_CHARS},
        "capital": {"type": "string", "maxLength": RECORD_MAX_CHARS},
    },
    "required": ["country", "capital"],
    "additionalProperties": False,
}
FRUITS_STOP = "4."
# "1. Banana\n2. Apple\n3. Orange\n" is about 15 tokens: room to reach the stop string.
FRUITS_MAX_TOKENS = 24
ESSAY_MAX_TOKENS = 8


def capitals_rows(countries: int | None = None) -> list[dict[str, str]]:
    """One row per country (the first `countries`), then the over-long row."""
    rows = [{"country": country, "reference": capital} for country, capital in CAPITALS.items()]
    return [*rows[:countries], {"country": TOO_LONG_COUNTRY, "reference": "none"}]


def capitals_recipe(countries: int | None = None) -> dict[str, Any]:
    """Four stages over the capitals: a short answer (EOS), a JSON record (schema), a list cut by a
    stop string, and an essay cut by max_tokens. `capital` is the answer stage (the training pairs)."""
    return {
        "name": "real-capitals" if countries is None else f"real-capitals-{countries}",
        "seed": 3,
        "seeds": {"records": capitals_rows(countries)},
        "answer_stage": "capital",
        "stages": [
            {
                "name": "capital",
                "messages": [
                    {"role": "system", "content": CAPITAL_SYSTEM},
                    {"role": "user", "content": "What is the capital of {{ country }}?"},
                ],
                "sampling": {"temperature": 0, "max_tokens": 16, "stop": ["\n"]},
            },
            {
                "name": "record",
                "messages": [
                    {
                        "role": "user",
                        "content": "Write a JSON object with the keys country and capital for {{ country }}.",
                    }
                ],
                "sampling": {"temperature": 0.7, "max_tokens": RECORD_MAX_TOKENS},
                "parser": {"type": "json", "schema": RECORD_SCHEMA},
            },
            {
                "name": "fruits",
                "messages": [
                    {"role": "user", "content": "List ten fruits, one per line, numbered 1. to 10."}
                ],
                "sampling": {"temperature": 0.7, "max_tokens": FRUITS_MAX_TOKENS, "stop": [FRUITS_STOP]},
            },
            {
                "name": "essay",
                "messages": [{"role": "user", "content": "Write a long essay about {{ country }}."}],
                "sampling": {"temperature": 0.7, "max_tokens": ESSAY_MAX_TOKENS},
            },
        ],
    }


TOPICS = [{"topic": "France"}, {"topic": "the Moon"}, {"topic": "water"}]


def multi_stage_recipe() -> dict[str, Any]:
    """Self-instruct in three stages: write questions (a list), answer each, judge each answer."""
    return {
        "name": "real-self-instruct",
        "seed": 5,
        "seeds": {"records": TOPICS},
        "stages": [
            {
                "name": "questions",
                "messages": [
                    {"role": "system", "content": "You write short quiz questions."},
                    {
                        "role": "user",
                        "content": "Write 2 short questions about {{ topic }}, one per line. "
                        "Write only the questions.",
                    },
                ],
                "sampling": {"temperature": 0.7, "max_tokens": 40, "stop": ["\n\n"]},
                "parser": {"type": "list", "max_items": 2},
            },
            {
                "name": "answer",
                "messages": [
                    {"role": "system", "content": "Answer in one short sentence."},
                    {"role": "user", "content": "{{ questions }}"},
                ],
                "sampling": {"temperature": 0, "max_tokens": 24, "stop": ["\n"]},
            },
            {
                "name": "judge",
                "judges": "answer",
                "messages": [
                    {
                        "role": "user",
                        "content": "Question: {{ questions }}\nAnswer: {{ answer }}\n"
                        "Rate the answer from 1 to 10. Reply with the number only.",
                    }
                ],
                "sampling": {"temperature": 0, "max_tokens": 3},
                "parser": {"type": "score", "min": 1, "max": 10, "structured": True},
            },
        ],
    }
