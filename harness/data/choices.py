"""Few-shot prompts with a fixed option set (the multiple-choice case study of Gupta et al. 2025, Sec. 5).

Two formats, read by the same loaders from the embedded fixtures or ``--data-dir``:

- the paper's files ``dset_MMLU.json``, ``dset_SST.json``, ``dset_MRPC.json``: a JSON list
  of ``{"prompt": str, "answer": str}``; the option set is fixed per task (A-D,
  positive/negative, Yes/No) and the answer follows the prompt after one space;
- a generic JSON Lines file of ``{"prompt": str, "options": [str, ...], "answer": str}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.data.jsonl import jsonl_records
from harness.data.prose import DataMissing
from harness.paths import FIXTURES_DIR

EMBEDDED_CHOICES = FIXTURES_DIR / "choices"
PAPER_CHOICES = Path("paper_downstream")
TASK_OPTIONS: dict[str, tuple[str, ...]] = {
    "MMLU": ("A", "B", "C", "D"),
    "SST": ("positive", "negative"),
    "MRPC": ("Yes", "No"),
}


@dataclass(frozen=True)
class ChoiceItem:
    task: str
    prompt: str
    options: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class ChoiceTask:
    name: str
    items: tuple[ChoiceItem, ...]
    source: str


def _check(item: ChoiceItem, where: str) -> ChoiceItem:
    if item.answer not in item.options:
        raise ValueError(f"{where}: answer {item.answer!r} is not one of the options {item.options}.")
    if len(set(item.options)) != len(item.options) or len(item.options) < 2:
        raise ValueError(f"{where}: options must be at least two distinct strings, got {item.options}.")
    return item


def read_paper_file(path: Path, task: str) -> ChoiceTask:
    """A paper-format file (JSON list of {prompt, answer}) with the task's fixed options."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    options = TASK_OPTIONS[task]
    items = []
    for i, rec in enumerate(records):
        try:
            items.append(_check(ChoiceItem(task, rec["prompt"], options, rec["answer"].strip()), f"{path}[{i}]"))
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"{path}[{i}]: expected an object with string 'prompt' and 'answer'.") from None
    return ChoiceTask(task, tuple(items), str(path))


def read_generic_jsonl(path: Path, task: str | None = None) -> ChoiceTask:
    """A JSON Lines file of {prompt, options, answer}."""
    path = Path(path)
    name = task or path.stem
    items = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                item = ChoiceItem(name, rec["prompt"], tuple(rec["options"]), rec["answer"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: expected {{prompt, options, answer}} ({err}).") from None
            items.append(_check(item, f"{path}:{line_no}"))
    return ChoiceTask(name, tuple(items), str(path))


def load_choice_tasks(data_dir: Path | None = None) -> tuple[list[ChoiceTask], str]:
    """The MMLU, SST and MRPC tasks: the paper's prompts from ``data_dir`` when given,
    else the embedded fixtures. Returns the tasks and the dataset name."""
    folder = EMBEDDED_CHOICES if data_dir is None else Path(data_dir) / PAPER_CHOICES
    name = "choices-embedded" if data_dir is None else "paper-downstream"
    tasks = []
    for task in TASK_OPTIONS:
        path = folder / f"dset_{task}.json"
        if not path.is_file():
            raise DataMissing(
                f"{path} is missing: --data-dir must hold {PAPER_CHOICES}/dset_{{MMLU,SST,MRPC}}.json "
                "(see ../shared/data/README.md), or leave --data-dir out to use the embedded fixtures."
            )
        tasks.append(read_paper_file(path, task))
    return tasks, name


def read_choices_file(path: Path) -> list[ChoiceTask]:
    """A ``--choices`` file: JSON Lines of ``{prompt, options, answer[, task]}``; lines with
    the same ``task`` form one task (no ``task``: the file's stem), in order of appearance."""
    path = Path(path)
    tasks: dict[str, list[ChoiceItem]] = {}
    for _, where, rec in jsonl_records(path):
        try:
            task = str(rec.get("task") or path.stem)
            item = ChoiceItem(task, rec["prompt"], tuple(rec["options"]), rec["answer"])
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{where}: expected {{prompt, options, answer[, task]}} ({err}).") from None
        tasks.setdefault(task, []).append(_check(item, where))
    if not tasks:
        raise ValueError(f"{path}: no prompts.")
    return [ChoiceTask(name, tuple(items), str(path)) for name, items in tasks.items()]
