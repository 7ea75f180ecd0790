"""Split one labeling job over N machines (``--shard i/n``) and merge their outputs into one file.

Shard i of n is the i-th contiguous slice of the loaded pairs (same data, limit and
seed give the same slices everywhere). Each row records its shard and how many
pairs the shard holds, so ``merge_shards`` can prove the merged file complete: every
shard present, every shard whole, one run (same model, template and settings), and
no pair twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from rlaif.label_store import OUTPUT_SUFFIXES, StoreError, label_rows, write_labels

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); shards count from 1."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"--shard must look like i/n with 1 <= i <= n, e.g. 2/4; got {text!r}")
    return int(match[1]), int(match[2])


def shard_slice(items: Sequence[T], index: int, count: int) -> list[T]:
    """The ``index``-th of ``count`` contiguous, near-equal slices (1-based); together they cover ``items`` once."""
    total = len(items)
    return list(items[(index - 1) * total // count:index * total // count])


def take_shard(pairs: Sequence[T], shard: tuple[int, int] | None, run_info: dict[str, Any]) -> Sequence[T]:
    """The shard's slice of ``pairs``; its rows record the shard and its size, so a merge can check it is whole."""
    if shard is None:
        return pairs
    pairs = shard_slice(pairs, *shard)
    run_info.update(shard=f"{shard[0]}/{shard[1]}", shard_pairs=len(pairs))
    return pairs


def merge_shards(paths: Sequence[str | Path], out: str | Path) -> list[dict[str, Any]]:
    """Merge shard outputs into ``out`` in shard order, after checking the job is whole; returns the rows.

    The same shard given twice (or a row repeated) is kept once; a pair in two
    different shards, a shard missing or short, or rows from different runs are errors.
    """
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise StoreError(f"{out}: output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    by_shard: dict[int, dict[str, dict[str, Any]]] = {}
    first: tuple[str, int | None, Path] | None = None  # (run_id, shard count, file) of the first row seen
    owner: dict[str, tuple[int, Path]] = {}
    for path in map(Path, paths):
        rows = label_rows(path)
        for line, row in enumerate(rows, start=1):
            where = f"{path}, row {line}"
            index, count = parse_shard(row["shard"]) if row.get("shard") else (None, None)
            if index is None:
                raise StoreError(f"{where}: field 'shard' is missing; this file was not labeled with --shard")
            if first is None:
                first = (row.get("run_id"), count, path)
            if row.get("run_id") != first[0]:
                raise StoreError(f"{where}: field 'run_id' is {row.get('run_id')}, but {first[2]} holds run "
                                 f"{first[0]}: the shards were labeled with different models or settings")
            if count != first[1]:
                raise StoreError(f"{where}: field 'shard' is {row['shard']}, but {first[2]} splits the job "
                                 f"into {first[1]} shards")
            pair_id = row["id"]
            if pair_id in owner and owner[pair_id][0] != index:
                raise StoreError(f"{where}: pair {pair_id!r} is also in shard {owner[pair_id][0]} "
                                 f"({owner[pair_id][1]}): the shards overlap")
            owner.setdefault(pair_id, (index, path))
            by_shard.setdefault(index, {}).setdefault(pair_id, row)
    if first is None:
        raise StoreError("no rows to merge")
    count = first[1]
    missing = [i for i in range(1, count + 1) if i not in by_shard]
    if missing:
        raise StoreError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing from the files given")
    for index, rows in sorted(by_shard.items()):
        expected = next(iter(rows.values())).get("shard_pairs")
        if expected is not None and len(rows) != expected:
            raise StoreError(f"shard {index}/{count} has {len(rows)} of its {expected} pairs: it did not finish; "
                             "rerun the same command to resume it, then merge again")
    merged = [row for _, rows in sorted(by_shard.items()) for row in rows.values()]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_labels(merged, out)
    return merged
