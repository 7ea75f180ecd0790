"""What the worker thread runs: direct 1-10 rewards and pairwise labels, through the same code as the CLI.

Rewards are ``DirectScorer.score`` and pairwise labels are ``label_pairs``, called on a batch
of requests at once, so the server's numbers are ``rlaif label``'s (``--direct`` for rewards)
for the same model, template and settings.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.backends.base import LabelBackend
from rlaif.direct_scores import DirectScorer
from rlaif.labeler import label_pairs, run_id
from rlaif.pairs import PreferencePair
from rlaif.score_cache import CachedBackend
from rlaif.templates import PromptTemplate

#: Columns that hold integers; a labels table read through pandas may hold them as floats.
INTEGER_COLUMNS = ("ai_choice", "position_first_order", "position_swapped_order", "human_choice")


def plain(value: Any) -> Any:
    """A labels-table cell as JSON allows it: Python numbers, None for NaN and infinities."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RewardService:
    """One backend, one template: ``run("reward", [(context, response), ...])`` and
    ``run("pairwise", [PreferencePair, ...])``, each returning one result per item.

    With ``cache`` the backend is wrapped in ``CachedBackend`` here, in the thread that will
    use it (a SQLite connection belongs to the thread that opened it).
    """

    def __init__(self, backend: LabelBackend, template: PromptTemplate, *, chat_template: bool = True,
                 cache: str | Path | None = None):
        self.cache = CachedBackend(backend, cache) if cache else None
        self.backend = self.cache or backend
        self.template, self.chat_template, self.source = template, chat_template, backend.source
        self.scorer = DirectScorer(self.backend, template, chat_template=chat_template)

    def run(self, kind: str, items: list) -> list[dict[str, Any]]:
        if kind == "reward":
            return self.rewards(items)
        if kind == "pairwise":
            return self.pairwise(items)
        raise ValueError(f"unknown kind of job {kind!r}")

    def rewards(self, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Reward in [-1, 1], expected 1-10 score and the mass on the ten labels, per (context, response);
        None where the response alone does not fit the model (the scorer's NaN)."""
        scored = self.scorer.score([context for context, _ in items], [response for _, response in items])
        return [{"reward": plain(reward), "score": plain(score), "mass": plain(mass)}
                for reward, score, mass in zip(scored["reward"], scored["score"], scored["mass"])]

    def pairwise(self, pairs: list[PreferencePair]) -> list[dict[str, Any]]:
        """``label_pairs`` rows, both orders swap-averaged, in one step; each row keeps its pair's own id."""
        unique = [replace(pair, id=str(i)) for i, pair in enumerate(pairs)]  # ids need only be unique per call
        frame = label_pairs(unique, self.backend, self.template, chat_template=self.chat_template,
                            pairs_per_step=len(unique), progress=False)
        rows = []
        for pair, row in zip(pairs, frame.to_dict("records")):
            row = {key: plain(value) for key, value in row.items()}
            row.update({key: int(row[key]) for key in INTEGER_COLUMNS if row.get(key) is not None})
            rows.append({**row, "id": pair.id})
        return rows

    def describe(self) -> dict[str, Any]:
        """What /health reports: the model, everything that changes a number, and the cache's counts."""
        fingerprint = self.scorer.fingerprint()
        return {"model": fingerprint["model"], "source": self.source,
                "task": self.template.task, "template": self.template.name, "chat_template": self.chat_template,
                "fingerprint": fingerprint,
                "pairwise_run_id": run_id(self.backend, self.template, self.chat_template),
                "cache": None if self.cache is None else {"path": str(self.cache.path), "hits": self.cache.hits,
                                                          "misses": self.cache.misses}}
