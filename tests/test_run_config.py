"""Run configs (``rlaif label --config``), the settings written beside every output, options an engine would
ignore, and ``--dry-run``. In process with the fake engine where no model is needed; the real default model
where the point is that a rerun from the written config gives the same labels."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fakes import FakeBackend

import rlaif
from rlaif.backends.base import LabelBackend
from rlaif.cli import build_parser, main
from rlaif.cli import label as label_command
from rlaif.dry_run import RecordingBackend, estimate_cost, tokens_shared_once
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.prompting import Prompting
from rlaif.templates import PromptTemplate

REPO = Path(__file__).resolve().parents[1]
RLAIF = str(Path(sys.executable).with_name("rlaif"))
LLMBAR = REPO.parent / "shared" / "data" / "llmbar" / "LLMBar_Natural"


class SourcedFake(FakeBackend):
    source = "fake"


@pytest.fixture
def fake_engine(monkeypatch):
    """`rlaif label` in this process, with the fake engine in place of the model it names."""
    made = []

    def build(args):
        made.append(SourcedFake(max_prompt_tokens=args.max_prompt_tokens))
        return made[-1]

    monkeypatch.setattr(label_command, "build_backend", build)
    return made


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_keys_are_the_flags_and_the_command_line_wins(tmp_path, fake_engine, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"q": f"question {i}", "a": "GOOD answer" if i % 2 else "answer",
                                        "b": "answer" if i % 2 else "GOOD answer", "who": i % 2}) + "\n"
                            for i in range(6)))
    config = write(tmp_path / "run.yaml", {
        "data": str(data), "format": "jsonl", "task": "instruction", "limit": 4, "no-cache": True,
        "columns": {"context": "q", "response_1": "a", "response_2": "b", "label": "who"},
        "label_map": {0: 2, 1: 1}, "preamble": ["base"], "out": str(tmp_path / "from_config.jsonl")})
    assert main(["label", "--config", str(config), "--quiet"]) == 0
    rows = pd.read_json(tmp_path / "from_config.jsonl", lines=True)
    assert list(rows["id"]) == ["pairs:1", "pairs:2", "pairs:3", "pairs:4"]
    assert list(rows["human_choice"]) == [2, 1, 2, 1] and (rows["ai_choice"] == rows["human_choice"]).all()
    out = tmp_path / "flags_win.jsonl"
    assert main(["label", "--config", str(config), "--limit", "2", "--out", str(out), "--quiet"]) == 0
    assert len(pd.read_json(out, lines=True)) == 2
    assert not (tmp_path / "flags_win.jsonl.cache.sqlite").exists()  # no-cache: true from the file


@pytest.mark.parametrize("config, message", [
    ({"max_promt_tokens": 3}, r"unknown key 'max_promt_tokens' \(did you mean 'max-prompt-tokens'\?\)"),
    ({"columns": {"contxt": "q"}}, r"unknown key 'columns.contxt' \(did you mean 'context'\?\)"),
    ({"shots": "two"}, "shots must be an integer, got 'two'"),
    ({"cot": "yes"}, "cot is a switch: true or false"),
    ({"backend": "triton"}, r"backend must be one of \['transformers', 'vllm', 'http'\]"),
    ({"model": ["a", "b"]}, "model takes one value, got a list"),
    ({"max-prompt-tokens": 3, "max_prompt_tokens": 4}, "sets 'max_prompt_tokens' a second time"),
])
def test_a_bad_config_fails_naming_the_file_and_the_key_before_any_work(tmp_path, fake_engine, config, message):
    path = write(tmp_path / "run.yaml", {"data": "examples", "format": "examples", "out": str(tmp_path / "o.jsonl"),
                                         **config})
    with pytest.raises(SystemExit, match=message) as failure:
        main(["label", "--config", str(path)])
    assert str(path) in str(failure.value) and not fake_engine and not (tmp_path / "o.jsonl").exists()


def test_the_written_settings_parse_back_to_the_same_run(tmp_path, fake_engine):
    out = tmp_path / "labels.jsonl"
    argv = ["label", "--data", "examples", "--format", "examples", "--out", str(out), "--preamble", "base,detailed",
            "--ensemble", "sample", "--shots", "2", "--clamp", "0.4,0.6", "--no-chat-template", "--limit", "5",
            "--vllm-option", "enforce_eager=true"]
    parser = build_parser()
    original = parser.parse_args(argv)
    from rlaif.cli.run_config import write_run_config

    written = write_run_config(str(out), parser.commands["label"], original, {"model": "fake"})
    settings = yaml.safe_load(written.read_text())
    assert settings["provenance"]["rlaif_version"] == rlaif.__version__
    assert settings["provenance"]["model_fingerprint"] == {"model": "fake"}
    assert settings["chat-template"] is False and settings["preamble"] == "base,detailed"
    from rlaif.cli import run_config

    again = build_parser()
    run_config.apply_config(again.commands["label"], str(written))
    reread = again.parse_args(["label"])
    skip = {"func", "parser", "config"}
    assert {k: v for k, v in vars(reread).items() if k not in skip} == \
        {k: v for k, v in vars(original).items() if k not in skip}


@pytest.mark.parametrize("flags, refused", [
    (["--backend", "http", "--base-url", "http://127.0.0.1:9", "--batch-size", "8"], "--batch-size"),
    (["--backend", "http", "--base-url", "http://127.0.0.1:9", "--dtype", "float32"], "--dtype"),
    (["--backend", "vllm", "--device", "cuda"], "--device"),
    (["--tensor-parallel-size", "2"], "--tensor-parallel-size"),
    (["--max-retries", "2"], "--max-retries"),
    (["--cot-max-tokens", "64"], r"--cot-max-tokens \(needs --cot\)"),
    (["--random-shots"], r"--random-shots \(needs --shots\)"),
    (["--ensemble", "sample"], r"--ensemble \(needs several preambles\)"),
    (["--no-cache", "--cache", "c.sqlite"], r"--cache \(not with --no-cache\)"),
])
def test_options_the_run_would_ignore_are_refused_before_the_model_loads(tmp_path, fake_engine, flags, refused):
    with pytest.raises(SystemExit, match=refused):
        main(["label", "--data", "examples", "--format", "examples", "--out", str(tmp_path / "o.jsonl"), *flags])
    assert not fake_engine


def test_tokens_shared_once_counts_a_common_prefix_once():
    words = FakeBackend().count_tokens
    assert tokens_shared_once(["a b c d", "x y", "a b c e"], words) == 4 + 1 + 2
    assert tokens_shared_once(["a b", "a b"], words) == 2
    assert tokens_shared_once([], words) == 0


def test_the_recording_engine_is_a_backend():
    assert isinstance(RecordingBackend(FakeBackend()), LabelBackend)


@pytest.mark.parametrize("prompting", [Prompting(), Prompting(cot=True, cot_max_tokens=5)], ids=["plain", "cot"])
def test_the_dry_run_counts_what_the_real_run_sends(prompting):
    pairs = load_pairs(None, "examples")
    template = PromptTemplate("instruction")
    # a limit that cuts some contexts and skips some pairs (the fake counts words)
    limit = 80 if prompting.cot else 45

    def run(engine):
        return label_pairs(pairs, engine, template, prompting=prompting, max_prompt_tokens=limit, progress=False)

    real_engine = FakeBackend()
    real = run(real_engine)
    flags = real["flags"].map(lambda f: f or [])
    assert 0 < flags.map(lambda f: "context_truncated" in f).sum() and 0 < flags.map(lambda f: "skipped" in f).sum()
    engine = FakeBackend()
    cost = estimate_cost(engine, run)
    assert cost.pairs == len(pairs)
    assert cost.pairs_truncated == flags.map(lambda f: "context_truncated" in f).sum()
    assert cost.pairs_skipped == flags.map(lambda f: "skipped" in f).sum()
    assert cost.label_prompts == len(real_engine.prompts_seen)
    assert cost.steps == real_engine.calls
    if not prompting.cot:  # with CoT the real rationales are shorter than the placeholders
        assert cost.prompt_tokens == sum(engine.count_tokens(real_engine.prompts_seen))
        assert cost.first_prompt == real_engine.prompts_seen[0]
    else:
        assert cost.rationale_prompts == sum(len(g["prompts"]) * g["n"] for g in real_engine.generated)
        assert cost.rationale_tokens_max == cost.rationale_prompts * 5
    assert cost.prompt_tokens_shared_once < cost.prompt_tokens
    assert engine.calls == 2  # the warm-up: one untimed call, one timed step; nothing else reached the engine
    assert cost.estimated_seconds > 0 and cost.weights_bytes is None


def test_dry_run_from_the_command_line_writes_nothing(tmp_path, fake_engine, capsys):
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--data", "examples", "--format", "examples", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "label prompts            48 in 3 steps" in printed and "estimated labeling time" in printed
    assert re.search(r"estimated wall time +\d+ s .*, with \d+ s to load the model", printed)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_a_rerun_from_the_written_config_gives_the_same_labels_and_the_dry_run_foresaw_them(tmp_path):
    config = write(tmp_path / "run.yaml", {"data": str(LLMBAR), "format": "llmbar", "limit": 3,
                                           "max-prompt-tokens": 380, "out": "first.jsonl"})

    def rlaif_label(*flags):
        done = subprocess.run([RLAIF, "label", "--quiet", *flags], capture_output=True, text=True, cwd=tmp_path,
                              timeout=900)
        assert done.returncode == 0, done.stderr
        return done

    dry = rlaif_label("--config", str(config), "--dry-run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]
    rlaif_label("--config", str(config))
    first = pd.read_json(tmp_path / "first.jsonl", lines=True)
    flags = first["flags"].map(lambda f: f or [])
    truncated = int(flags.map(lambda f: "context_truncated" in f).sum())
    skipped = int(flags.map(lambda f: "skipped" in f).sum())
    assert truncated > 0  # the limit is meant to cut some contexts
    assert f"pairs                    3 ({truncated} with the context cut to fit, {skipped} skipped" in dry.stdout
    assert f"label prompts            {2 * (3 - skipped)} in 1 step" in dry.stdout
    settings = yaml.safe_load((tmp_path / "first.jsonl.config.yaml").read_text())
    assert settings["provenance"]["model_fingerprint"]["model"] == first["model"][0]
    assert settings["dtype"] == settings["provenance"]["model_fingerprint"]["dtype"]  # the precision, resolved
    rlaif_label("--config", "first.jsonl.config.yaml", "--out", "again.jsonl", "--no-cache")
    again = pd.read_json(tmp_path / "again.jsonl", lines=True)
    assert list(again["run_id"]) == list(first["run_id"])
    pd.testing.assert_series_equal(again["p"], first["p"], rtol=0, atol=1e-9)
