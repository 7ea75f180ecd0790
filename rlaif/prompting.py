"""The paper's prompting techniques as switches: few-shot, two-step chain-of-thought, preamble ensembles.

``Prompting`` says which are on; ``PairPrompts`` builds, for one pair, every prompt
the label needs (both orders x preambles x sampled rationales) and the labeler
averages their label distributions. Chain-of-thought (Lee et al. 2023, 2.1):
step 1 replaces the ending with a request to reason and generates a rationale
per order; step 2 appends the rationale and the usual ending and reads the label.

Prompts longer than the model's context: the context (conversation, post,
instruction) is cut from the left, keeping its most recent part and both
responses whole, and the row is flagged ``context_truncated``. A pair whose
responses alone do not fit is not sent to the model: its row carries
``skipped_reason`` and no probabilities, and the report counts it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from rlaif.backends.base import LabelBackend
from rlaif.pairs import PreferencePair
from rlaif.templates import PromptTemplate, TemplateError

#: Marks the start of a context that was cut to fit the model.
TRUNCATION_MARK = "[...] "


@dataclass(frozen=True)
class Prompting:
    """Which techniques are on. The defaults are the plain labeler: base preamble, 0-shot, no CoT."""

    preambles: tuple[str, ...] | None = None  #: None = the template's; several = an ensemble (CAI's principles)
    ensemble: str = "average"               #: "average" the label over all preambles, or "sample" one per pair
    shots: int = 0                          #: few-shot exemplars from the task's exemplars.jsonl
    random_shots: bool = False              #: seeded random choice per pair (else the file's order)
    cot: bool = False                       #: two-step chain-of-thought
    cot_max_tokens: int = 256
    cot_samples: int = 1                    #: > 1: self-consistency, rationales sampled at cot_temperature
    cot_temperature: float = 0.0            #: 0 = greedy
    clamp: tuple[float, float] | None = None  #: clamp each prompt's label probability, e.g. (0.4, 0.6)
    seed: int = 0

    def __post_init__(self):
        if self.preambles is not None and not self.preambles:
            raise ValueError("preambles must name at least one preamble (or be None: the template's)")
        if self.ensemble not in ("average", "sample"):
            raise ValueError(f"ensemble must be 'average' or 'sample', got {self.ensemble!r}")
        if self.shots < 0 or self.cot_samples < 1 or self.cot_max_tokens < 1:
            raise ValueError("shots must be >= 0, cot_samples and cot_max_tokens >= 1")
        if self.cot_samples > 1 and self.cot_temperature <= 0:
            raise ValueError("self-consistency (cot_samples > 1) needs cot_temperature > 0")
        if self.clamp is not None and not (0 <= self.clamp[0] < 0.5 < self.clamp[1] <= 1
                                           and abs(self.clamp[0] + self.clamp[1] - 1) < 1e-9):
            raise ValueError(f"clamp must be (lo, 1 - lo) with 0 <= lo < 0.5, e.g. (0.4, 0.6); got {self.clamp}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def same_item(exemplar: dict[str, Any], pair: PreferencePair) -> bool:
    """An exemplar is the sample itself when ids match or it holds the same context and responses."""
    return exemplar["id"] == pair.id or (
        exemplar["context"] == pair.context
        and {exemplar["response_1"], exemplar["response_2"]} == {pair.response_1, pair.response_2})


def choose_exemplars(pool: Sequence[dict[str, Any]], shots: int, pair: PreferencePair, *,
                     random_order: bool, seed: int) -> list[dict[str, Any]]:
    """``shots`` exemplars for this pair, never the pair itself, with preferred positions balanced.

    Exemplars are drawn alternately from those preferring position 1 and position 2
    (which comes first is a seeded coin per pair), so the shots teach no position.
    Responses are never swapped, so a rationale that names "Response 1" stays true.
    """
    if shots == 0:
        return []
    usable = [e for e in pool if not same_item(e, pair)]
    rng = random.Random(f"{seed}:{pair.id}")
    by_position = {1: [e for e in usable if e["label"] == 1], 2: [e for e in usable if e["label"] == 2]}
    if random_order:
        for group in by_position.values():
            rng.shuffle(group)
    position = 1 if rng.random() < 0.5 else 2
    chosen = []
    while len(chosen) < shots and (by_position[1] or by_position[2]):
        group = by_position[position] or by_position[3 - position]
        chosen.append({**group.pop(0)})
        position = 3 - position
    if len(chosen) < shots:
        raise TemplateError(f"{shots}-shot needs {shots} exemplars other than the sample; the pool has {len(usable)}")
    for example in chosen:
        example["preferred_position"] = example["label"]
    return chosen


class PairPrompts:
    """Builds a pair's prompts for one ``Prompting`` and says how their results combine."""

    def __init__(self, template: PromptTemplate, backend: LabelBackend, chat_template: bool, prompting: Prompting):
        if prompting.preambles is None:
            prompting = replace(prompting, preambles=(template.preamble,))
        for name in prompting.preambles:
            if name not in template.preambles:
                raise TemplateError(f"task {template.task} has no preamble {name!r}; it has {template.preambles}")
        self.template, self.backend, self.chat, self.prompting = template, backend, chat_template, prompting
        self.pool = template.exemplar_pool() if prompting.shots else []
        self.cot_ending = template.cot_ending() if prompting.cot else None

    def preambles_for(self, pair: PreferencePair) -> tuple[str, ...]:
        if self.prompting.ensemble == "sample" and len(self.prompting.preambles) > 1:
            return (random.Random(f"{self.prompting.seed}:preamble:{pair.id}").choice(self.prompting.preambles),)
        return self.prompting.preambles

    def _wrap(self, message: str, reply: str) -> str:
        return self.backend.chat_prompt(message, reply) if self.chat else f"{message}\n{reply}"

    def first_step(self, pair: PreferencePair, context: str | None = None) -> list[tuple[int, str, str, str]]:
        """(order, preamble, message, ending) for both orders x preambles; order 0 shows response 1 first."""
        context = pair.context if context is None else context
        exemplars = choose_exemplars(self.pool, self.prompting.shots, pair,
                                     random_order=self.prompting.random_shots, seed=self.prompting.seed)
        out = []
        for order, (first, second) in enumerate(((pair.response_1, pair.response_2),
                                                 (pair.response_2, pair.response_1))):
            for preamble in self.preambles_for(pair):
                prompt = self.template.render(context, first, second, exemplars, preamble=preamble,
                                              rationales=self.prompting.cot)
                out.append((order, preamble, prompt.message, prompt.ending))
        return out

    def label_prompt(self, message: str, ending: str, rationale: str | None = None) -> str:
        """The text whose next tokens are the label: after the ending, or after the rationale and the ending."""
        if rationale is None:
            return self._wrap(message, ending)
        return self._wrap(message, f"{self.cot_ending} {rationale.strip()}\n{ending}")

    def rationale_prompt(self, message: str) -> str:
        return self._wrap(message, self.cot_ending)


def _longest_prompt(builder: PairPrompts, pair: PreferencePair, context: str) -> int:
    """Tokens in the longest prompt this pair sends (a rationale counted at its maximum length)."""
    entries = builder.first_step(pair, context)
    rationale = "" if builder.prompting.cot else None  # a rationale's own tokens are added below
    texts = [builder.label_prompt(message, ending, rationale) for _, _, message, ending in entries]
    extra = builder.prompting.cot_max_tokens if builder.prompting.cot else 0
    longest_label = max(builder.backend.count_tokens(list(builder.template.labels)))
    return max(builder.backend.count_tokens(texts)) + extra + longest_label


def cut_context(context: str, fits: Callable[[str], bool]) -> str | None:
    """The longest end of ``context``, marked with TRUNCATION_MARK, for which ``fits`` holds
    (binary search over characters kept); None when not even the mark alone fits."""
    def cut(keep: int) -> str:
        return TRUNCATION_MARK + context[len(context) - keep:] if keep else TRUNCATION_MARK

    if not fits(cut(0)):
        return None
    low, high = 0, len(context)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(cut(mid)) else (low, mid - 1)
    return cut(low)


def fit_context(pair: PreferencePair, builder: PairPrompts,
                max_tokens: int | None) -> tuple[str | None, bool, str | None]:
    """(context to use, context_truncated, skipped_reason) under the context-length policy above."""
    if max_tokens is None or _longest_prompt(builder, pair, pair.context) <= max_tokens:
        return pair.context, False, None
    context = cut_context(pair.context, lambda text: _longest_prompt(builder, pair, text) <= max_tokens)
    if context is None:
        shortest = _longest_prompt(builder, pair, TRUNCATION_MARK)
        return None, False, f"the responses alone make a {shortest}-token prompt; the model takes {max_tokens}"
    return context, True, None
