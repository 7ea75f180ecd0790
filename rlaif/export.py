"""A labels table as TRL's preference dataset: ``prompt``, ``chosen``, ``rejected``, plus the labels.

The labels table holds no texts (only ids and a hash of each pair), so the pairs it was
labeled from are joined back by id and checked against ``pair_hash``. The chosen response is
the one the AI prefers (``label="ai"``: p > 0.5; exact ties dropped) or the one people
prefer (``label="human"``); ``p_chosen`` keeps the AI's soft label for that response, which
soft-label DPO reads as its target. Conversational form turns an HH-style transcript
("\\n\\nHuman: ...\\n\\nAssistant: ...") into messages, as TRL's chat templates expect.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from rlaif.label_store import StoreError
from rlaif.labels_table import ai_choices, numeric, pair_hash
from rlaif.pairs import PreferencePair

LABEL_SOURCES = ("ai", "human")
AGREEMENT = ("any", "agree", "disagree")
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def transcript_messages(context: str) -> list[dict[str, str]]:
    """An HH-style transcript as chat messages (its trailing empty "Assistant:" dropped); any other
    context is one user message."""
    parts = _TURN.split(context)
    if len(parts) < 3 or parts[0].strip():
        return [{"role": "user", "content": context}]
    messages = [{"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
                for speaker, text in zip(parts[1::2], parts[2::2])]
    return messages[:-1] if messages[-1]["role"] == "assistant" and not messages[-1]["content"] else messages


def pairs_for_rows(labels: pd.DataFrame, pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The pair each labels row was labeled from: found by id, and checked against the row's
    ``pair_hash`` so that texts from other data are never shown or exported as this run's."""
    by_id = {pair.id: pair for pair in pairs}
    matched = []
    for i, (pair_id, written_hash) in enumerate(zip(labels["id"], labels.get("pair_hash", [None] * len(labels)))):
        pair = by_id.get(pair_id)
        if pair is None:
            raise StoreError(f"labels row {i} (id {pair_id!r}) has no pair among the pairs given")
        if isinstance(written_hash, str) and written_hash != pair_hash(pair):
            raise StoreError(f"labels row {i} (id {pair_id!r}) was labeled from different data than the pair "
                             "given (its pair_hash differs): use the data that was labeled")
        matched.append(pair)
    return matched


def preference_table(labels: pd.DataFrame, pairs: Sequence[PreferencePair], *, label: str = "ai",
                     min_confidence: float = 0.0, agreement: str = "any",
                     conversational: bool = False) -> pd.DataFrame:
    """One row per kept pair: prompt, chosen, rejected, p_chosen, ai_choice, human_choice, id, task.

    Kept: pairs whose ``label`` source prefers a response; with ``min_confidence`` > 0 only
    those with |p - 0.5| > it; with ``agreement`` "agree"/"disagree" only pairs that people
    and the AI both decided, agreeing or not.
    """
    if label not in LABEL_SOURCES:
        raise ValueError(f"label must be one of {LABEL_SOURCES}, got {label!r}")
    if agreement not in AGREEMENT:
        raise ValueError(f"agreement must be one of {AGREEMENT}, got {agreement!r}")
    if not 0.0 <= min_confidence < 0.5:
        raise ValueError(f"min_confidence must be in [0, 0.5), got {min_confidence!r}")
    p, ai_choice, human = numeric(labels, "p"), ai_choices(labels), numeric(labels, "human_choice")
    rows = []
    for i, pair in enumerate(pairs_for_rows(labels, pairs)):
        ai = int(ai_choice[i]) if ai_choice[i] in (1.0, 2.0) else None  # an AI tie prefers neither
        person = int(human[i]) if human[i] in (1.0, 2.0) else None
        preferred = ai if label == "ai" else person
        if preferred is None or (min_confidence and not abs(p[i] - 0.5) > min_confidence):
            continue
        if agreement != "any" and (ai is None or person is None or (ai == person) != (agreement == "agree")):
            continue
        chosen, rejected = (pair.response_1, pair.response_2) if preferred == 1 else (pair.response_2, pair.response_1)
        rows.append({"prompt": pair.context, "chosen": chosen, "rejected": rejected,
                     "p_chosen": (p[i] if preferred == 1 else 1.0 - p[i]) if math.isfinite(p[i]) else None,
                     "ai_choice": ai, "human_choice": person, "id": pair.id, "task": pair.task})
    table = pd.DataFrame(rows, columns=["prompt", "chosen", "rejected", "p_chosen", "ai_choice", "human_choice",
                                        "id", "task"])
    table = table.astype({"ai_choice": "Int64", "human_choice": "Int64"})
    if conversational:
        table["prompt"] = [transcript_messages(text) for text in table["prompt"]]
        for column in ("chosen", "rejected"):
            table[column] = [[{"role": "assistant", "content": text.strip()}] for text in table[column]]
    return table


def preference_dataset(labels: pd.DataFrame, pairs: Sequence[PreferencePair], **options: Any):
    """``preference_table`` as a Hugging Face ``datasets.Dataset`` (``save_to_disk`` / ``push_to_hub``)."""
    import datasets

    return datasets.Dataset.from_pandas(preference_table(labels, pairs, **options), preserve_index=False)
