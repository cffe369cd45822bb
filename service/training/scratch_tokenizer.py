"""The tokenizer of a student built from scratch: trained on the rows, or reused (e.g. the teacher's).

`student.from_scratch.tokenizer` is "teacher" (the tokenizer of the version's teacher model folder)
or a tokenizer/model folder. It is resolved to a folder at submission and stored resolved on the
run, so the worker builds the student around the very tokenizer the API checked. The check reads
files only (the API process never imports transformers): a tokenizer file and a chat template;
the worker's load is the proof, and fails the run with the reason when it is not a tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import ValidationProblem
from service.model_folders import GGUF_SUFFIX, TOKENIZER_FILES, has_chat_template
from service.training.schemas import TEACHER_TOKENIZER, StudentSpec

LOC = ("body", "student", "from_scratch", "tokenizer")


def tokenizer_folder_problem(folder: str) -> str | None:
    """Why `folder` cannot serve as a from-scratch student's tokenizer, or None."""
    path = Path(folder).expanduser()
    if not path.exists():
        return f"no such tokenizer folder: {folder}"
    if path.is_file() and path.name.lower().endswith(GGUF_SUFFIX):
        return f"a GGUF file, not a tokenizer folder: {folder}; give the folder of a converted model"
    if not path.is_dir():
        return f"not a tokenizer folder (a file): {folder}"
    if not any((path / name).is_file() for name in TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        return f"not a tokenizer folder (no {', '.join(TOKENIZER_FILES[:3])}, ...): {folder}"
    if not has_chat_template(path):
        return f"the tokenizer in {folder} has no chat template (the training rows are chat messages)"
    return None


def resolve_scratch_tokenizer(student: StudentSpec, teacher: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The student as stored on the run: a from-scratch tokenizer resolved to a checked, absolute folder.

    Args:
        teacher: the version's teacher config (called only for "teacher"); may raise a 422 of its own.

    Raises:
        ValidationProblem: 422 at student.from_scratch.tokenizer.
    """
    stored = student.model_dump(mode="json", exclude_none=True)
    wanted = student.from_scratch.tokenizer if student.from_scratch is not None else None
    if wanted is None:
        return stored
    if wanted == TEACHER_TOKENIZER:
        try:
            config = teacher()
        except ValidationProblem as exc:
            raise ValidationProblem.at(LOC, f'"teacher": {exc.detail}') from exc
        folder = str(config.get("model") or "")
        if config.get("engine", "vllm") != "vllm" or not folder:
            raise ValidationProblem.at(
                LOC, f'"teacher": the teacher {folder or "(unnamed)"} is served over HTTP, not a local folder'
            )
        problem = tokenizer_folder_problem(folder)
        if problem:
            raise ValidationProblem.at(LOC, f'"teacher": the version\'s teacher: {problem}')
    else:
        folder = wanted
        problem = tokenizer_folder_problem(folder)
        if problem:
            raise ValidationProblem.at(LOC, f'give "teacher" or a tokenizer folder: {problem}')
    stored["from_scratch"]["tokenizer"] = str(Path(folder).expanduser().resolve())
    return stored
