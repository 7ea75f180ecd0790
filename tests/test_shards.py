"""--shard i/n and `rlaif merge`: shards cover the job once, and a merge proves the result whole."""

import json

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlaif.cli import main
from rlaif.label_store import StoreError, label_rows, read_labels, write_labels
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.shards import merge_shards, parse_shard, shard_slice
from rlaif.templates import PromptTemplate
from tests.fakes import FakeBackend


@given(total=st.integers(0, 200), count=st.integers(1, 17))
def test_shards_cover_every_item_once_in_order_and_near_equal(total, count):
    items = list(range(total))
    slices = [shard_slice(items, i, count) for i in range(1, count + 1)]
    assert [x for s in slices for x in s] == items
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "2/0", "-1/3"])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(ValueError, match="i/n"):
        parse_shard(text)


@pytest.fixture(params=[".jsonl", ".parquet"])
def shard_files(tmp_path, request):
    pairs = load_pairs("examples", "examples")
    template = PromptTemplate("summarization")
    whole = label_pairs(pairs, FakeBackend(), template, out=tmp_path / "whole.jsonl", progress=False)
    files = []
    for i in (1, 2, 3):
        out = tmp_path / f"shard{i}{request.param}"
        label_pairs(pairs, FakeBackend(), template, out=out, progress=False, shard=(i, 3), pairs_per_step=2)
        files.append(out)
    return whole, files


def test_merged_shards_equal_the_unsharded_run(shard_files, tmp_path):
    whole, files = shard_files
    merged = pd.DataFrame(merge_shards(list(reversed(files)) + files[:1],  # any order, one twice
                                       tmp_path / "merged.parquet"))
    assert list(merged["id"]) == list(whole["id"])
    assert set(merged["shard"]) == {"1/3", "2/3", "3/3"}
    # exactly: no float loses a digit on the way through Parquet or the merge
    pd.testing.assert_frame_equal(merged.drop(columns=["shard", "shard_pairs"]), whole, check_dtype=False,
                                  check_exact=True)
    assert list(read_labels(tmp_path / "merged.parquet")["id"]) == list(whole["id"])


def test_a_missing_shard_is_named(shard_files, tmp_path):
    with pytest.raises(StoreError, match=r"shard\(s\) 2/3 missing"):
        merge_shards([shard_files[1][0], shard_files[1][2]], tmp_path / "m.jsonl")


def test_an_unfinished_shard_is_named(shard_files, tmp_path):
    path = shard_files[1][1]
    rows = label_rows(path)
    write_labels(rows[:-1], path)  # the shard's run stopped before its last pair
    with pytest.raises(StoreError, match=rf"shard 2/3 has {len(rows) - 1} of its {len(rows)} pairs"):
        merge_shards(shard_files[1], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


def test_overlapping_shards_and_mixed_runs_are_refused(shard_files, tmp_path):
    files = shard_files[1]
    rows = label_rows(files[1])
    moved = files[1].with_name("overlap.jsonl")
    moved.write_text("".join(json.dumps({**row, "shard": "3/3"}) + "\n" for row in rows[:1]))
    with pytest.raises(StoreError, match=rf"overlap.jsonl, row 1: pair '{rows[0]['id']}' is also in shard 2"):
        merge_shards(files + [moved], tmp_path / "m.jsonl")
    other = files[1].with_name("other.jsonl")
    other.write_text("".join(json.dumps({**row, "run_id": "elsewhere"}) + "\n" for row in rows))
    with pytest.raises(StoreError, match="other.jsonl, row 1: field 'run_id' is elsewhere"):
        merge_shards([files[0], other, files[2]], tmp_path / "m.jsonl")


def test_merge_from_the_command_line(shard_files, tmp_path, capsys):
    whole, files = shard_files
    assert main(["merge", *map(str, files), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert list(read_labels(tmp_path / "m.jsonl")["id"]) == list(whole["id"])
    assert main(["merge", str(files[0]), "--out", str(tmp_path / "m2.jsonl")]) == 2
    assert "missing" in capsys.readouterr().err
