"""Labeling prompts from sandboxed Jinja templates: preamble, exemplars, sample, ending."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

ASKS_FOR = ("preferred", "more_harmful")
PART_FILES = ("preamble_base.jinja", "sample.jinja", "ending.jinja")
EXEMPLARS_FILE = "_common/exemplars.jinja"


class TemplateError(ValueError):
    """A template folder that is missing a part, or declares something invalid."""


def shipped_template_dir() -> Path:
    """The templates installed with the package (``prompts/`` in the repository)."""
    return Path(str(resources.files("rlaif.prompts")))


def list_tasks(template_dir: str | Path | None = None) -> dict[str, str]:
    """Task name -> description for every task folder under ``template_dir``."""
    root = Path(template_dir) if template_dir else shipped_template_dir()
    tasks = {}
    for meta in sorted(root.glob("*/task.yaml")):
        tasks[meta.parent.name] = (yaml.safe_load(meta.read_text(encoding="utf-8")) or {}).get("description", "")
    return tasks


def _two_strings(value: Any, where: Path, field: str) -> list[str]:
    if (not isinstance(value, list) or len(value) != 2 or len(set(value)) != 2
            or not all(isinstance(item, str) and item for item in value)):
        raise TemplateError(f"{where}: {field} must be two different non-empty strings, got {value!r}")
    return value


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: the message (preamble, exemplars, sample) and the ending the label follows.

    Kept apart so a chat model gets the message as the user turn and the ending as
    the start of its own reply; a plain model gets ``message + "\\n" + ending``.
    """

    message: str
    ending: str

    @property
    def text(self) -> str:
        return f"{self.message}\n{self.ending}"


class PromptTemplate:
    """One task's templates, rendered in a sandbox with StrictUndefined.

    ``labels[0]`` always names the response shown first. When the task asks which
    response is MORE harmful, ``asks_more_harmful`` tells the labeler to flip.
    Optional files: more ``preamble_NAME.jinja`` (principles for ensembles),
    ``cot_ending.jinja`` (chain-of-thought request), ``exemplars.jsonl`` (few-shot
    pool), ``score_preamble/score_sample/score_ending.jinja`` (direct 1-10 scoring).
    ``labels``, ``names`` and ``ending`` override the task's label words, the names the
    sample gives the responses, and the ending text, so label-word choices ("A"/"B",
    "Response 1"/"Response 2") are compared on one template (the shipped parts read
    ``label_1``/``label_2`` and ``name_1``/``name_2``).
    """

    def __init__(self, task: str, preamble: str = "base", template_dir: str | Path | None = None, *,
                 labels: Sequence[str] | None = None, names: Sequence[str] | None = None,
                 ending: str | None = None):
        root = Path(template_dir) if template_dir else shipped_template_dir()
        folder = root / task
        if not (folder / "task.yaml").is_file():
            known = ", ".join(list_tasks(root)) or "none"
            raise TemplateError(f"no task {task!r} in {root} (task.yaml missing); tasks there: {known}")
        meta = yaml.safe_load((folder / "task.yaml").read_text(encoding="utf-8")) or {}
        where = folder / "task.yaml"
        labels = _two_strings(meta.get("labels", ["1", "2"]) if labels is None else list(labels), where, "labels")
        names = labels if names is None else _two_strings(list(names), where, "names")
        if ending is not None and not isinstance(ending, str):
            raise TemplateError(f"{where}: ending must be a string, got {ending!r}")
        asks_for = meta.get("asks_for", "preferred")
        if asks_for not in ASKS_FOR:
            raise TemplateError(f"{folder / 'task.yaml'}: asks_for must be one of {ASKS_FOR}, got {asks_for!r}")
        for part in PART_FILES:
            if not (folder / part).is_file():
                raise TemplateError(f"{folder}: missing template part {part}")

        self.task, self.folder = task, folder
        #: Every preamble this task has: ``base``, ``detailed``, and any ``preamble_NAME.jinja``.
        self.preambles = tuple(sorted(f.name[len("preamble_"):-len(".jinja")] for f in folder.glob("preamble_*.jinja")))
        if preamble not in self.preambles:
            raise TemplateError(f"preamble must be one of {self.preambles}, got {preamble!r}")
        self.preamble = preamble
        self.labels: tuple[str, str] = tuple(labels)
        #: How the sample names the two responses ("Reply 1"), given to every part as name_1/name_2;
        #: the labels are given as label_1/label_2. Defaults: the labels.
        self.names: tuple[str, str] = tuple(names)
        self.ending_override = ending
        self.asks_more_harmful = asks_for == "more_harmful"
        search_path = [str(folder), str(root), str(shipped_template_dir())]
        self._env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(search_path),
                                         undefined=jinja2.StrictUndefined, autoescape=False)

    @property
    def fingerprint(self) -> str:
        """Hash of every file in the task folder and the shared parts, the labels and the preamble."""
        identity = (self.labels, self.asks_more_harmful, self.preamble)
        if self.names != self.labels or self.ending_override is not None:  # no override: the files alone, as before
            identity += (self.names, self.ending_override)
        digest = hashlib.sha256(repr(identity).encode())
        files = sorted(p for p in self.folder.iterdir() if p.is_file())
        for path in files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        source, _, _ = self._env.loader.get_source(self._env, EXEMPLARS_FILE)
        digest.update(source.encode())
        return digest.hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.task}/{self.preamble}"

    def has(self, filename: str) -> bool:
        return (self.folder / filename).is_file()

    def _render(self, name: str, **values) -> str:
        words = {"label_1": self.labels[0], "label_2": self.labels[1], "name_1": self.names[0], "name_2": self.names[1]}
        try:
            return self._env.get_template(name).render(**words, **values).strip("\n")
        except Exception as exc:  # syntax errors, sandbox refusals, range limits: all the template's fault
            raise TemplateError(f"{self.folder / name}: {type(exc).__name__}: {exc}") from exc

    def render_sample(self, context: str, response_1: str, response_2: str) -> str:
        return self._render("sample.jinja", context=context, response_1=response_1, response_2=response_2)

    def answer_label(self, preferred_position: int) -> str:
        """The label that means "the response at this position is preferred" in this task's question."""
        position = 3 - preferred_position if self.asks_more_harmful else preferred_position
        return self.labels[position - 1]

    def ending(self) -> str:
        """The text the label follows: ``ending.jinja``, or the ``ending`` given to the constructor."""
        return self._render("ending.jinja") if self.ending_override is None else self.ending_override

    def cot_ending(self) -> str:
        if not self.has("cot_ending.jinja"):
            raise TemplateError(f"{self.folder}: chain-of-thought needs cot_ending.jinja")
        return self._render("cot_ending.jinja")

    def render(self, context: str, first: str, second: str, exemplars: Sequence[Mapping[str, Any]] = (), *,
               preamble: str | None = None, rationales: bool = False) -> Prompt:
        """The prompt showing ``first`` as response 1 and ``second`` as response 2.

        Each exemplar is a mapping with context, response_1, response_2 and
        ``preferred_position`` (1 or 2); with ``rationales`` its rationale is shown
        after the chain-of-thought request, as the model will be asked to write one.
        """
        preamble = preamble or self.preamble
        if preamble not in self.preambles:
            raise TemplateError(f"preamble must be one of {self.preambles}, got {preamble!r}")
        ending = self.ending()
        parts = [self._render(f"preamble_{preamble}.jinja")]
        if exemplars:
            shown = []
            for example in exemplars:
                if example.get("preferred_position") not in (1, 2):
                    raise TemplateError(f"exemplar preferred_position must be 1 or 2, got "
                                        f"{example.get('preferred_position')!r}")
                sample = self.render_sample(example["context"], example["response_1"], example["response_2"])
                thought = f"\n{self.cot_ending()} {example['rationale'].strip()}" if rationales else ""
                shown.append(f"{sample}{thought}\n{ending}{self.answer_label(example['preferred_position'])}")
            parts.append(self._render(EXEMPLARS_FILE, exemplars=shown))
        parts.append(self.render_sample(context, first, second))
        return Prompt("\n\n".join(parts), ending)

    def render_score(self, context: str, response: str) -> Prompt:
        """Direct scoring: the prompt asking for a 1-10 score of one response."""
        for part in ("score_preamble.jinja", "score_sample.jinja", "score_ending.jinja"):
            if not self.has(part):
                raise TemplateError(f"{self.folder}: direct scoring needs {part}")
        message = "\n\n".join([self._render("score_preamble.jinja"),
                                self._render("score_sample.jinja", context=context, response=response)])
        return Prompt(message, self._render("score_ending.jinja"))

    def exemplar_pool(self) -> list[dict[str, Any]]:
        """The task's few-shot exemplars (``exemplars.jsonl``): context, response_1, response_2,
        label (1 or 2: which is preferred), optional rationale and id."""
        path = self.folder / "exemplars.jsonl"
        if not path.is_file():
            return []
        pool = []
        for row, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TemplateError(f"{path}: row {row}: not valid JSON ({exc.msg})") from None
            for key in ("context", "response_1", "response_2"):
                if not isinstance(item.get(key), str):
                    raise TemplateError(f"{path}: row {row}: field {key!r} must be a string")
            if item.get("label") not in (1, 2):
                raise TemplateError(f"{path}: row {row}: field 'label' must be 1 or 2")
            pool.append({"id": str(item.get("id", f"exemplar-{row}")), "rationale": str(item.get("rationale", "")),
                         **{k: item[k] for k in ("context", "response_1", "response_2", "label")}})
        return pool
