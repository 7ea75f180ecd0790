"""PriDe labeling (Zheng et al. 2023): both orders on a small sample, one order on the rest.

Swap averaging doubles the cost of every label. A small labeler's position bias
is mostly a prior over label positions that hardly depends on the pair, so it
can be estimated once, from a few pairs labeled in both orders, and divided out
of every other pair labeled in one order only: n + sample prompts instead of 2n.
The sample's own rows are corrected in both orders and swap-averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rlaif import debiasing
from rlaif.backends.base import LabelBackend
from rlaif.label_store import write_labels_frame
from rlaif.labeler import label_pairs
from rlaif.pairs import PreferencePair
from rlaif.templates import PromptTemplate


def pride_sample(n: int, sample_pairs: int, seed: int) -> np.ndarray:
    """Sorted indices of the pairs labeled in both orders (seeded, so a resumed run picks the same)."""
    if sample_pairs < 1:
        raise ValueError(f"PriDe needs at least one pair labeled in both orders, got sample_pairs={sample_pairs}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:sample_pairs])


def journal_paths(out: str | Path) -> tuple[Path, Path]:
    """Where the two resumable passes go, beside ``out``: the both-orders sample and the one-order rest."""
    out = Path(out)
    return (out.with_name(f"{out.stem}.pride_sample.jsonl"), out.with_name(f"{out.stem}.pride_rest.jsonl"))


def label_pairs_pride(pairs: Sequence[PreferencePair], backend: LabelBackend, template: PromptTemplate, *,
                      sample_pairs: int = 16, seed: int = 0, out: str | Path | None = None, fresh: bool = False,
                      **label_options) -> pd.DataFrame:
    """Label ``pairs`` the PriDe way; one row per pair, in input order, like ``rlaif.label_pairs``.

    Every row records ``debiasing`` = {method: "pride", prior, sample_pairs} and
    ``pride_sample`` (whether it was one of the pairs labeled in both orders);
    ``p_plain`` is the label before the prior was divided out. With ``out``, both
    passes are resumable journals beside it (``journal_paths``) and the corrected
    table is written to ``out`` at the end. ``label_options`` go to ``label_pairs``
    (chat_template, prompting, max_prompt_tokens, ...).
    """
    if label_options.get("shard") is not None:
        raise ValueError("label_pairs_pride draws its sample from all pairs: shard the pairs before, not with shard=")
    pairs = list(pairs)
    chosen = pride_sample(len(pairs), sample_pairs, seed)
    in_sample = np.zeros(len(pairs), dtype=bool)
    in_sample[chosen] = True
    sample_out, rest_out = journal_paths(out) if out is not None else (None, None)
    sample = label_pairs([pairs[i] for i in chosen], backend, template, out=sample_out, fresh=fresh, **label_options)
    prior = debiasing.pride_prior(debiasing.logprobs_column(sample, "logprobs_first_order", len(template.labels)),
                                  debiasing.logprobs_column(sample, "logprobs_swapped_order", len(template.labels)))
    rest_pairs = [pair for pair, chosen_pair in zip(pairs, in_sample) if not chosen_pair]
    rest = label_pairs(rest_pairs, backend, template, out=rest_out, fresh=fresh, both_orders=False, **label_options) \
        if rest_pairs else sample.iloc[:0]
    rows = pd.concat([sample.assign(pride_sample=True), rest.assign(pride_sample=False)], ignore_index=True)
    rows = rows.set_index("id").loc[[pair.id for pair in pairs]].reset_index()
    corrected = debiasing.apply_prior(rows, prior, template.asks_more_harmful, "pride")
    corrected["debiasing"] = [{**d, "sample_pairs": len(chosen)} for d in corrected["debiasing"]]
    if out is not None:
        write_labels_frame(corrected, Path(out))
    return corrected
