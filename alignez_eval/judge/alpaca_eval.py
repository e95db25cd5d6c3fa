"""AlpacaEval `model_outputs.json` in and out.

AlpacaEval keeps one system's answers as a JSON list of `{instruction, output, generator, dataset}`
(one row per instruction). Such a file is a RUN like an lm-eval output directory: `load_run` reads
it through `load_alpaca_eval`, and it pairs with any other run by exact instruction text (see
`alignez_eval.judge.runs.pair_runs`). `alpaca_eval_rows` writes one of our runs back out in that
format, for AlpacaEval's own evaluator or for judging against its published outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignez_eval.errors import DataError
from alignez_eval.judge.samples import Run, Sample
from alignez_eval.queries import query_id

FORMAT = "alpaca_eval"
FAMILY = "alpaca_eval"  # task and family of every sample read from a model_outputs.json


def _preview(text: str, n: int = 60) -> str:
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= n else one_line[: n - 3] + "...")


def is_alpaca_eval_data(data: Any) -> bool:
    """lm-eval writes a results JSON as an object; AlpacaEval's model outputs are a list."""
    return isinstance(data, list)


def load_alpaca_eval(path: str | Path, data: list[Any] | None = None, name: str | None = None) -> Run:
    """Read an AlpacaEval `model_outputs.json` (already parsed when `data` is given).

    Every row needs a non-empty string `instruction` and a string `output`; `generator` and
    `dataset` are optional. An instruction may appear once: pairing is by instruction text, so a
    repeat would make the pair ambiguous (AlpacaEval's own evaluator merges on it too)."""
    path = Path(path)
    if data is None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is not readable JSON ({exc}); pass an AlpacaEval model_outputs.json") from exc
    if not is_alpaca_eval_data(data):
        raise DataError(f"{path} is not an AlpacaEval model_outputs.json (a JSON list of "
                        "{instruction, output, generator, dataset})")
    if not data:
        raise DataError(f"{path} is an empty list; an AlpacaEval model_outputs.json needs one row per instruction")
    samples: dict[tuple[str, str], Sample] = {}
    first_row: dict[str, int] = {}  # instruction text -> first row index, for the duplicate error
    generators: list[str] = []
    for i, row in enumerate(data):
        where = f"{path} row {i}"
        if not isinstance(row, dict):
            raise DataError(f"{where} is {type(row).__name__}, not an object with instruction and output")
        instruction, output = row.get("instruction"), row.get("output")
        if not isinstance(instruction, str) or not instruction.strip():
            raise DataError(f"{where} has no instruction text; every row needs a non-empty string 'instruction'")
        if not isinstance(output, str):
            raise DataError(f"{where} has output {output!r}; every row needs a string 'output' (use \"\" for none)")
        if instruction in first_row:
            raise DataError(f"{where} repeats the instruction of row {first_row[instruction]} "
                            f"({_preview(instruction)}); keep one row per instruction")
        first_row[instruction] = i
        doc_id = query_id(instruction)  # the id our alpaca_eval task gives the same instruction
        key = (FAMILY, doc_id)
        if key in samples:
            other = samples[key].instruction
            raise DataError(f"{where} ({_preview(instruction)}) and row {first_row[other]} differ only in "
                            "surrounding whitespace; keep one row per instruction")
        generator = row.get("generator")
        if isinstance(generator, str) and generator and generator not in generators:
            generators.append(generator)
        dataset = row.get("dataset")
        samples[key] = Sample(task=FAMILY, family=FAMILY, doc_id=doc_id, instruction=instruction, answer=output,
                              prompt=instruction, dataset=dataset if isinstance(dataset, str) else "")
    notes = []
    if len(generators) > 1:
        notes.append(f"{path.name}: rows of several generators {generators}, read as one run")
    default_name = generators[0] if len(generators) == 1 else path.stem
    return Run(name=name or default_name, path=path, samples=samples, files={FAMILY: path},
               model_name=generators[0] if len(generators) == 1 else None, notes=notes, source=FORMAT)


def _selected(run: Run, tasks: list[str] | None) -> list[Sample]:
    if not tasks:
        return list(run.samples.values())
    known = set(run.tasks) | set(run.families)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise DataError(f"run {run.name} has no task {', '.join(unknown)}; its tasks: {', '.join(run.tasks)}")
    return [s for s in run.samples.values() if s.task in tasks or s.family in tasks]


def alpaca_eval_rows(run: Run, generator: str | None = None, tasks: list[str] | None = None) -> list[dict[str, str]]:
    """`run` (or its `tasks`, by task or family name) as AlpacaEval model outputs, in the run's
    order. `generator` defaults to the run's name; `dataset` is the doc's own `dataset` field
    (AlpacaEval's subsets) where it has one, else the task family."""
    rows: list[dict[str, str]] = []
    seen: dict[str, Sample] = {}
    for s in _selected(run, tasks):
        if s.instruction in seen:
            other = seen[s.instruction]
            raise DataError(f"run {run.name} asks {_preview(s.instruction)} twice ({other.family} doc {other.doc_id} "
                            f"and {s.family} doc {s.doc_id}); AlpacaEval needs each instruction once - "
                            "export one task with --task NAME")
        seen[s.instruction] = s
        rows.append({"instruction": s.instruction, "output": s.answer, "generator": generator or run.name,
                     "dataset": s.dataset or s.family})
    if not rows:
        raise DataError(f"run {run.name} has no samples to export")
    return rows
