"""Labeling prompts from sandboxed Jinja templates: preamble, exemplars, sample, ending."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

PREAMBLES = ("base", "detailed")
ASKS_FOR = ("preferred", "more_harmful")
PART_FILES = ("preamble_base.jinja", "preamble_detailed.jinja", "sample.jinja", "ending.jinja")
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
    """

    def __init__(self, task: str, preamble: str = "base", template_dir: str | Path | None = None):
        root = Path(template_dir) if template_dir else shipped_template_dir()
        folder = root / task
        if not (folder / "task.yaml").is_file():
            known = ", ".join(list_tasks(root)) or "none"
            raise TemplateError(f"no task {task!r} in {root} (task.yaml missing); tasks there: {known}")
        if preamble not in PREAMBLES:
            raise TemplateError(f"preamble must be one of {PREAMBLES}, got {preamble!r}")
        meta = yaml.safe_load((folder / "task.yaml").read_text(encoding="utf-8")) or {}
        labels = meta.get("labels", ["1", "2"])
        if (not isinstance(labels, list) or len(labels) != 2 or len(set(labels)) != 2
                or not all(isinstance(label, str) and label for label in labels)):
            raise TemplateError(f"{folder / 'task.yaml'}: labels must be two different non-empty strings, got {labels!r}")
        asks_for = meta.get("asks_for", "preferred")
        if asks_for not in ASKS_FOR:
            raise TemplateError(f"{folder / 'task.yaml'}: asks_for must be one of {ASKS_FOR}, got {asks_for!r}")
        for part in PART_FILES:
            if not (folder / part).is_file():
                raise TemplateError(f"{folder}: missing template part {part}")

        self.task, self.preamble, self.folder = task, preamble, folder
        self.labels: tuple[str, str] = tuple(labels)
        self.asks_more_harmful = asks_for == "more_harmful"
        search_path = [str(folder), str(root), str(shipped_template_dir())]
        self._env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(search_path),
                                         undefined=jinja2.StrictUndefined, autoescape=False)
        self._files = [f"preamble_{preamble}.jinja", "sample.jinja", "ending.jinja", EXEMPLARS_FILE]

    @property
    def fingerprint(self) -> str:
        """Hash of every file the prompt is built from, the labels and the question asked."""
        digest = hashlib.sha256(repr((self.labels, self.asks_more_harmful)).encode())
        for name in self._files:
            source, _, _ = self._env.loader.get_source(self._env, name)
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        return digest.hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.task}/{self.preamble}"

    def _render(self, name: str, **values) -> str:
        try:
            return self._env.get_template(name).render(**values).strip("\n")
        except Exception as exc:  # syntax errors, sandbox refusals, range limits: all the template's fault
            raise TemplateError(f"{self.folder / name}: {type(exc).__name__}: {exc}") from exc

    def render_sample(self, context: str, response_1: str, response_2: str) -> str:
        return self._render("sample.jinja", context=context, response_1=response_1, response_2=response_2)

    def render(self, context: str, first: str, second: str,
               exemplars: Sequence[Mapping[str, str]] = ()) -> Prompt:
        """The prompt showing ``first`` as response 1 and ``second`` as response 2.

        Each exemplar is a mapping with context, response_1, response_2 and label
        (one of ``self.labels``); it is rendered with the same sample and ending.
        """
        ending = self._render("ending.jinja")
        parts = [self._render(f"preamble_{self.preamble}.jinja")]
        if exemplars:
            shown = []
            for example in exemplars:
                if example.get("label") not in self.labels:
                    raise TemplateError(f"exemplar label must be one of {self.labels}, got {example.get('label')!r}")
                sample = self.render_sample(example["context"], example["response_1"], example["response_2"])
                shown.append(f"{sample}\n{ending}{example['label']}")
            parts.append(self._render(EXEMPLARS_FILE, exemplars=shown))
        parts.append(self.render_sample(context, first, second))
        return Prompt("\n\n".join(parts), ending)
