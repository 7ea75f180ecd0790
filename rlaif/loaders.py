"""Read human-preference data in its publishers' formats into PreferencePair records.

Every loader reads rows (``rlaif.data_files``: a local JSON/JSONL(.gz)/CSV/Parquet
file, a folder, a ``datasets.Dataset`` or a Hugging Face hub name) and turns each row
into one or more pairs. Row numbers in errors are 1-based: the line of a JSONL file,
the position in a JSON list, the row of a table.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from rlaif.data_files import read_rows
from rlaif.pairs import TIE, DataError, PreferencePair, from_chosen_rejected

Row = Mapping[str, Any]

#: The fields a generic table may map its columns to.
GENERIC_FIELDS = ("id", "context", "response_1", "response_2", "label", "chosen", "rejected", "task")
#: Label values understood by the generic loader unless the user passes ``label_map``.
#: 0 is deliberately absent: in some sets it means "response 1", in others "tie".
DEFAULT_LABEL_MAP: dict[Any, int] = {1: 1, 2: 2, "1": 1, "2": 2, "tie": TIE, "Tie": TIE}


class PairList(list):
    """A list of pairs that also carries the bad records skipped while loading."""

    def __init__(self, pairs: Iterable[PreferencePair] = (), skipped: list[DataError] | None = None):
        super().__init__(pairs)
        self.skipped: list[DataError] = skipped or []


# --------------------------------------------------------------------------- names

def _source_name(source: str) -> str:
    """A short stable name for ids: the file name without extensions, or the hub name."""
    path = Path(source)
    if path.exists():
        name = path.name
        for suffix in (".gz", ".jsonl", ".json", ".csv", ".parquet"):
            name = name.removesuffix(suffix)
        return name
    return source


# ------------------------------------------------------------------ field checks

def _text(record: Any, key: str, *, allow_empty: bool = True) -> str:
    if not isinstance(record, Mapping):
        raise DataError(f"expected a record (JSON object), got {type(record).__name__}")
    if key not in record or record[key] is None:
        raise DataError("missing", field_name=key)
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", field_name=key)
    if "\x00" in value:
        raise DataError("contains a NUL byte", field_name=key)
    if not allow_empty and not value.strip():
        raise DataError("is empty", field_name=key)
    return value


# ---------------------------------------------------------------- format parsers

HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"


def split_hh_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into (shared context, chosen reply, rejected reply).

    The context is everything before the last ``\\n\\nAssistant:`` both transcripts
    share; the replies are what follows it. Transcripts that differ before their
    final Assistant turn are an error, not a silent mis-split.
    """
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ASSISTANT)
    if cut < 0:
        raise DataError("the transcripts share no Assistant turn", field_name="chosen")
    context = chosen[:cut].strip()
    replies = chosen[cut + len(HH_ASSISTANT):], rejected[cut + len(HH_ASSISTANT):]
    for key, reply in zip(("chosen", "rejected"), replies):
        if HH_HUMAN in reply:
            raise DataError("the transcripts differ before their final Assistant turn", field_name=key)
    if not context:
        raise DataError("empty context before the final Assistant turn", field_name="chosen")
    return context, replies[0].strip(), replies[1].strip()


def parse_hh_rlhf(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
    """Anthropic HH-RLHF: ``{"chosen": transcript, "rejected": transcript}``."""
    context, chosen, rejected = split_hh_transcripts(_text(record, "chosen"), _text(record, "rejected"))
    return [from_chosen_rejected(f"{name}:{row}", context, chosen, rejected, seed=seed, task=name)]


def parse_hhh(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
    """BIG-bench hhh_alignment example: ``input`` and ``target_scores`` {response: score}.

    Every two targets with different scores make a pair (the higher score is
    preferred); equal scores make a tie. The task files hold two targets each.
    """
    context = _text(record, "input", allow_empty=False)
    scores = record.get("target_scores")
    if not isinstance(scores, Mapping) or len(scores) < 2:
        raise DataError("must map at least two responses to scores", field_name="target_scores")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores.values()):
        raise DataError("scores must be finite numbers", field_name="target_scores")
    if any("\x00" in target for target in scores):
        raise DataError("a response contains a NUL byte", field_name="target_scores")
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    pairs = []
    for k, ((better, s_better), (worse, s_worse)) in enumerate(itertools.combinations(ranked, 2)):
        pair_id = f"{name}:{row}" if len(ranked) == 2 else f"{name}:{row}.{k}"
        pair = from_chosen_rejected(pair_id, context, better, worse, seed=seed, task=name)
        if s_better == s_worse:
            pair = PreferencePair(pair.id, context, pair.response_1, pair.response_2, TIE, name, pair.metadata)
        pairs.append(pair)
    return pairs


def parse_llmbar(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
    """LLMBar: ``{input, output_1, output_2, label}`` with label 1 or 2 (already positional)."""
    label = record.get("label") if isinstance(record, Mapping) else None
    if isinstance(label, bool) or label not in (1, 2):
        raise DataError(f"must be 1 or 2, got {label!r}", field_name="label")
    return [PreferencePair(f"{name}:{row}", _text(record, "input", allow_empty=False),
                           _text(record, "output_1"), _text(record, "output_2"), int(label), name)]


PRD_PREFERENCE = {-1: 1, 1: 2, 0: TIE}


def parse_prd(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
    """PRD long-form QA: ``{question, answer_a, answer_b, overall_preference}`` (-1 = a, 1 = b, 0 = tie)."""
    preference = record.get("overall_preference") if isinstance(record, Mapping) else None
    if isinstance(preference, bool) or not isinstance(preference, Hashable) \
            or preference not in PRD_PREFERENCE:
        raise DataError(f"must be -1, 0 or 1, got {preference!r}", field_name="overall_preference")
    extra = {k: record[k] for k in ("answer_a_type", "answer_b_type", "coherence_preference",
                                    "factuality_preference", "justification") if k in record}
    return [PreferencePair(f"{name}:{row}", _text(record, "question", allow_empty=False),
                           _text(record, "answer_a"), _text(record, "answer_b"),
                           PRD_PREFERENCE[preference], name, extra)]


def parse_tldr(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
    """OpenAI summarize_from_feedback comparisons: ``info`` (post), ``summaries`` [2], ``choice`` 0/1."""
    info = record.get("info") if isinstance(record, Mapping) else None
    if not isinstance(info, Mapping):
        raise DataError("missing or not an object", field_name="info")
    post = info.get("post") or info.get("article")
    if not isinstance(post, str) or not post.strip():
        raise DataError("missing post/article text", field_name="info.post")
    context = "\n".join(f"{key.upper()}: {info[key]}" for key in ("subreddit", "title")
                        if isinstance(info.get(key), str)) + f"\nPOST: {post}"
    summaries = record.get("summaries")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise DataError("must be a list of two summaries", field_name="summaries")
    texts = []
    for i, summary in enumerate(summaries):
        if not isinstance(summary, Mapping):
            raise DataError(f"must be an object with a text, got {type(summary).__name__}",
                            field_name=f"summaries[{i}]")
        try:
            texts.append(_text(summary, "text"))
        except DataError as error:
            raise DataError(error.reason, field_name=f"summaries[{i}].text") from None
    choice = record.get("choice")
    if choice not in (0, 1) or isinstance(choice, bool):
        raise DataError(f"must be 0 or 1, got {choice!r}", field_name="choice")
    pair_id = f"{name}:{info.get('id', row)}:{row}"
    return [PreferencePair(pair_id, context.strip(), texts[0], texts[1], int(choice) + 1, name)]


PANDALM_VOTES = {0: TIE, 1: 1, 2: 2}


def _pandalm_vote(record: Row, key: str) -> int:
    raw = record[key]
    vote = int(raw) if isinstance(raw, str) and raw.strip() in ("0", "1", "2") else raw
    if isinstance(vote, bool) or not isinstance(vote, Hashable) or vote not in PANDALM_VOTES:
        raise DataError(f"must be 0 (tie), 1 or 2, got {raw!r}", field_name=key)
    return PANDALM_VOTES[vote]


def _pandalm_response(record: Row, key: str) -> tuple[str, bool]:
    """The response text; a bare JSON true/false/number (a few published rows) becomes its text."""
    value = record.get(key)
    if isinstance(value, bool):
        return str(value), True
    if isinstance(value, (int, float)) and math.isfinite(value):
        return str(value), True
    return _text(record, key), False


def parse_pandalm(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
    """PandaLM test set: ``{idx, instruction, input, response1, response2, annotator1..3, ...}``.

    The human label is the strict majority of the annotators (a majority for 0 is a tie;
    no majority, e.g. a three-way split, leaves the pair unlabeled); every vote is kept in
    ``metadata["human_choices"]`` for human-human agreement.
    """
    instruction = _text(record, "instruction")
    extra = _text(record, "input") if record.get("input") is not None else ""
    if not (instruction.strip() or extra.strip()):
        raise DataError("is empty, and so is input", field_name="instruction")
    keys = sorted((k for k in record if re.fullmatch(r"annotator\d+", str(k))), key=lambda k: int(k[9:]))
    if not keys:
        raise DataError("no annotator1, annotator2, ... fields", field_name="annotator1")
    votes = [_pandalm_vote(record, key) for key in keys]
    top, count = Counter(votes).most_common(1)[0]
    responses = [_pandalm_response(record, key) for key in ("response1", "response2")]
    meta: dict[str, Any] = {"human_choices": votes}
    meta.update({k: record[k] for k in ("idx", "cmp_key", "motivation_app") if k in record})
    coerced = [key for key, (_, was_coerced) in zip(("response1", "response2"), responses) if was_coerced]
    if coerced:
        meta["coerced_to_text"] = coerced
    idx = record.get("idx")
    pair_id = f"{name}:{idx}" if isinstance(idx, int) and not isinstance(idx, bool) else f"{name}:row{row}"
    context = "\n\n".join(part.strip() for part in (instruction, extra) if part.strip())
    return [PreferencePair(pair_id, context, responses[0][0], responses[1][0],
                           top if 2 * count > len(votes) else None, name, meta)]


def generic_parser(columns: Mapping[str, str] | None = None,
                   label_map: Mapping[Any, int] | None = None) -> Callable[..., list[PreferencePair]]:
    """Parser for any table: ``columns`` maps our field names to the table's column names.

    A table gives either ``response_1``/``response_2`` (and optionally ``label``) or
    ``chosen``/``rejected`` (placed by a seeded coin flip). Unknown label values are an
    error, never a guess.
    """
    columns = dict(columns or {})
    unknown = set(columns) - set(GENERIC_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) in column mapping: {sorted(unknown)}; known: {GENERIC_FIELDS}")
    labels = dict(DEFAULT_LABEL_MAP if label_map is None else label_map)
    col = {f: columns.get(f, f) for f in GENERIC_FIELDS}

    def parse(record: Row, row: int, name: str, seed: int) -> list[PreferencePair]:
        if not isinstance(record, Mapping):
            raise DataError(f"expected a record (JSON object), got {type(record).__name__}")
        pair_id = str(record[col["id"]]) if record.get(col["id"]) not in (None, "") else f"{name}:{row}"
        task = record.get(col["task"]) if isinstance(record.get(col["task"]), str) else name
        context = _text(record, col["context"], allow_empty=False)
        if col["response_1"] not in record and col["chosen"] in record:
            return [from_chosen_rejected(pair_id, context, _text(record, col["chosen"]),
                                         _text(record, col["rejected"]), seed=seed, task=task)]
        choice = None
        raw = record.get(col["label"])
        if isinstance(raw, float) and math.isnan(raw):
            raw = None  # a missing cell of a nullable Parquet/pandas column
        if raw is not None and raw != "":
            key = raw.strip() if isinstance(raw, str) else raw
            if isinstance(key, float) and key.is_integer():
                key = int(key)
            if isinstance(key, str) and key not in labels and re.fullmatch(r"-?\d{1,18}", key):
                key = int(key)  # CSV cells are text: "0" finds a label_map written with 0
            if isinstance(key, bool) or not isinstance(key, Hashable) or key not in labels:
                raise DataError(f"value {raw!r} is not one of {sorted(set(map(str, labels)))}; "
                                "pass a label map to say what it means", field_name=col["label"])
            choice = labels[key]
        return [PreferencePair(pair_id, context, _text(record, col["response_1"]),
                               _text(record, col["response_2"]), choice, task)]

    return parse


# ------------------------------------------------------------------- entry point

#: Publishers' formats, with the JSON field holding the records and the file to look
#: for when the source is a folder of subsets (one subfolder per subset).
FORMATS: dict[str, tuple[Callable[..., list[PreferencePair]], str | None, str | None]] = {
    "hh-rlhf": (parse_hh_rlhf, None, None),
    "hhh": (parse_hhh, "examples", "task.json"),
    "llmbar": (parse_llmbar, None, "dataset.json"),
    "prd": (parse_prd, None, None),
    "tldr": (parse_tldr, None, None),
    "pandalm": (parse_pandalm, None, None),
}
GENERIC_FORMATS = ("jsonl", "json", "csv", "parquet", "hf", "examples")
#: The generic formats that read one file.
FILE_FORMATS = ("jsonl", "json", "csv", "parquet")
#: The template task each format is labeled with unless the user says otherwise.
DEFAULT_TASK = {"hh-rlhf": "harmless", "hhh": "helpful", "llmbar": "instruction", "prd": "instruction",
                "tldr": "summarization", "examples": "instruction", "pandalm": "instruction"}


#: Pair sets shipped inside the package (written for rlaif), loaded with format "examples".
EXAMPLE_SETS = {
    "examples": "examples.jsonl",              # 24 short instruction pairs with clear preferences
    "injection-probe": "injection_probe.jsonl",  # worse responses that tell the labeler to pick them
}


def examples_path(name: str = "examples") -> Path:
    """Path of a shipped pair set (see EXAMPLE_SETS)."""
    if name not in EXAMPLE_SETS:
        raise DataError(f"no shipped set {name!r}; choose one of {sorted(EXAMPLE_SETS)}")
    return Path(str(resources.files("rlaif.examples").joinpath(EXAMPLE_SETS[name])))


def _sources(source: Any, fmt: str) -> list[tuple[Any, str]]:
    """(source, name) for each file to read; a folder of subsets becomes one per subset."""
    if fmt == "examples":
        name = "examples" if source is None else str(source)
        return [(examples_path(name), name)]
    subset_file = FORMATS[fmt][2] if fmt in FORMATS else None
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and subset_file:
        root = Path(source)
        files = sorted(root.glob(subset_file)) or sorted(root.glob(f"*/{subset_file}"))
        if not files:
            raise DataError(f"no {subset_file} in this folder or its subfolders", source=str(root))
        prefix = {"hhh": "hhh", "llmbar": "llmbar"}[fmt]
        return [(f, f"{prefix}/{f.parent.name}") for f in files]
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file() and subset_file \
            and Path(source).name == subset_file:
        return [(source, f"{fmt}/{Path(source).parent.name}")]
    name = _source_name(str(source)) if isinstance(source, (str, os.PathLike)) else fmt
    return [(source, name)]


def load_pairs(source: Any, format: str, *, limit: int | None = None, seed: int = 0,
               columns: Mapping[str, str] | None = None, label_map: Mapping[Any, int] | None = None,
               skip_bad: bool = False, split: str = "train", **load_kwargs) -> PairList:
    """Load preference pairs.

    Args:
        source: a file, a folder, a ``datasets.Dataset`` or a hub name (ignored for ``examples``).
        format: one of ``FORMATS`` or ``GENERIC_FORMATS``.
        limit: keep the first N pairs (in file order).
        seed: seeds the coin flip that places chosen/rejected into response slots.
        columns, label_map: for generic tables, see ``generic_parser``.
        skip_bad: skip bad records and count them in ``.skipped`` instead of raising.
        split, load_kwargs: passed to ``datasets.load_dataset`` for hub names and folders.
    """
    if format in FORMATS:
        parse, json_field = FORMATS[format][:2]
    elif format in GENERIC_FORMATS:
        parse, json_field = generic_parser(columns, label_map), None
    else:
        raise ValueError(f"unknown format {format!r}; choose one of {sorted(FORMATS) + list(GENERIC_FORMATS)}")
    if limit is not None and limit <= 0:
        return PairList()
    if format in FILE_FORMATS and isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        raise DataError(f"is a folder; --format {format} reads one file (name the file, or read a folder of "
                        "data files with --format hf)", source=str(source))
    pairs, skipped, seen = PairList(), [], set()
    for path, name in _sources(source, format):
        shown = str(path) if isinstance(path, (str, os.PathLike)) else type(path).__name__
        for row, record in read_rows(path, json_field=json_field, split=split, **load_kwargs):
            try:
                if isinstance(record, DataError):
                    raise record
                new = parse(record, row, name, seed)
                for pair in new:
                    if pair.id in seen:
                        raise DataError(f"duplicate id {pair.id!r}", field_name="id")
            except DataError as exc:
                located = exc.at(shown, row)
                if not skip_bad:
                    raise located from None
                skipped.append(located)
                continue
            for pair in new:
                seen.add(pair.id)
                pairs.append(pair)
                if limit is not None and len(pairs) >= limit:
                    pairs.skipped = skipped
                    return pairs
    pairs.skipped = skipped
    return pairs
