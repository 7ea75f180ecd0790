"""The command line as a user runs it: the installed ``rlaif`` entry point, in a subprocess."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fakes import FakeBackend

from rlaif.analysis.report import summarize
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.templates import PromptTemplate

REPO = Path(__file__).resolve().parents[1]
RLAIF = [str(Path(sys.executable).with_name("rlaif"))]
HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"


def run(*args, cwd=None):
    return subprocess.run(RLAIF + list(args), capture_output=True, text=True, cwd=cwd, timeout=900)


def test_templates_lists_what_ships(tmp_path):
    result = run("templates", cwd=tmp_path)  # from another directory: templates come from the package
    assert result.returncode == 0, result.stderr
    for task in ("harmless", "helpful", "instruction", "summarization"):
        assert task in result.stdout
    assert "MORE harmful" in result.stdout


def test_report_json_matches_the_python_summary(tmp_path):
    out = tmp_path / "labels.jsonl"
    labels = label_pairs(load_pairs(None, "examples"), FakeBackend(), PromptTemplate("instruction"),
                         out=out, progress=False)
    result = run("report", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    expected = summarize(labels)
    assert report["alignment"] == pytest.approx(expected["alignment"])
    assert ({k: report["position_bias"][k] for k in expected["position_bias"]}
            == pytest.approx(expected["position_bias"]))
    assert report["pairs"] == 24
    from rlaif import metrics

    assert report["alignment_ci"]["low"] <= report["alignment"] <= report["alignment_ci"]["high"]
    assert report["kappa"] == pytest.approx(metrics.ai_human_kappa(labels))
    assert report["calibration"]["brier"] == pytest.approx(metrics.calibration(labels)["brier"])
    text = run("report", str(out), "--temperature-scaling")
    assert "temperature scaling      T = " in text.stdout
    assert "alignment with humans" in text.stdout and f"{100 * expected['alignment']:.1f}%" in text.stdout


def test_bad_input_names_file_row_and_field_and_writes_nothing(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"context": "q", "response_1": "a", "response_2": "b", "label": 1}\n'
                    '{"context": "q", "response_1": 5, "response_2": "b", "label": 2}\n')
    out = tmp_path / "labels.jsonl"
    result = run("label", "--data", str(data), "--format", "jsonl", "--task", "instruction", "--out", str(out))
    assert result.returncode == 2
    assert str(data) in result.stderr and "row 2" in result.stderr and "'response_1'" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_missing_task_for_a_generic_format_is_explained(tmp_path):
    result = run("label", "--data", "x.jsonl", "--format", "jsonl", "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode != 0 and "--task is required" in result.stderr


def test_wheel_carries_templates_and_examples(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("rlaif-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for task in ("harmless", "helpful", "instruction", "summarization"):
        for part in ("task.yaml", "preamble_base.jinja", "preamble_detailed.jinja", "sample.jinja", "ending.jinja"):
            assert f"rlaif/prompts/{task}/{part}" in names
    assert "rlaif/prompts/_common/exemplars.jinja" in names
    assert "rlaif/examples/examples.jsonl" in names


@pytest.mark.model
@pytest.mark.skipif(not HH.exists(), reason="needs ../shared/data")
def test_label_then_resume_then_report_with_the_real_model(tmp_path):
    out = tmp_path / "labels.jsonl"
    common = ["label", "--data", str(HH), "--format", "hh-rlhf", "--out", str(out), "--quiet"]
    first = run(*common, "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert "alignment with humans" in first.stdout
    rows_before = out.read_text().splitlines()
    second = run(*common, "--limit", "3", "--resume", "--batch-size", "2")
    assert second.returncode == 0, second.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["dev:1", "dev:2", "dev:3"]
    assert out.read_text().splitlines()[:2] == rows_before  # the first two were not relabeled
    for row in rows:
        assert {"id", "p_first_order", "p_swapped_order", "p", "ai_choice", "human_choice"} <= set(row)
        assert row["model"] == "smollm2-135m" and row["template"] == "harmless/base"
    report = json.loads(run("report", str(out), "--json").stdout)
    agree = [r["ai_choice"] == r["human_choice"] for r in rows]
    assert report["alignment"] == pytest.approx(sum(agree) / 3)


@pytest.mark.model
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    import os
    import signal
    import time

    common = ["label", "--data", "examples", "--format", "examples", "--quiet", "--batch-size", "4"]
    reference = run(*common, "--out", str(tmp_path / "reference.jsonl"), "--no-cache")
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed.jsonl"
    process = subprocess.Popen(RLAIF + common + ["--out", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) >= 8:  # the first step of 8 pairs is on disk
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    lines_at_kill = len(out.read_bytes().splitlines())
    assert 8 <= lines_at_kill < 24

    resumed = run(*common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "from the score cache" in resumed.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    want = [json.loads(line) for line in (tmp_path / "reference.jsonl").read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in want] and len({r["id"] for r in got}) == 24
    for a, b in zip(got, want):
        for key in ("p", "p_first_order", "p_swapped_order"):
            assert a[key] == pytest.approx(b[key], abs=1e-6)
        assert {k: v for k, v in a.items() if not k.startswith(("p", "logprobs", "mass", "candidate"))} == \
               {k: v for k, v in b.items() if not k.startswith(("p", "logprobs", "mass", "candidate"))}


def test_bad_technique_settings_fail_before_the_model_loads(tmp_path):
    result = run("label", "--data", "examples", "--format", "examples", "--cot", "--cot-samples", "3",
                 "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and "cot_temperature" in result.stderr and "model:" not in result.stderr
    result = run("label", "--data", "examples", "--format", "examples", "--preamble", "base,nope",
                 "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and "nope" in result.stderr
    result = run("label", "--data", "examples", "--format", "examples", "--pride", "2", "--direct",
                 "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 1 and "--pride" in result.stderr and "model:" not in result.stderr


@pytest.mark.model
def test_pride_labels_the_sample_in_both_orders_and_the_rest_in_one(tmp_path):
    out = tmp_path / "pride.jsonl"
    result = run("label", "--data", "examples", "--format", "examples", "--limit", "4", "--pride", "1", "--quiet",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "5 scored" in result.stderr  # 1 pair x 2 orders + 3 pairs x 1 order, not 8
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and sum(r["pride_sample"] for r in rows) == 1
    assert all(r["debiasing"]["method"] == "pride" and r["debiasing"]["sample_pairs"] == 1 for r in rows)
    assert all((r["p_swapped_order"] is None) == (not r["pride_sample"]) for r in rows)
    assert "alignment with humans" in result.stdout


@pytest.mark.model
def test_technique_switches_from_the_command_line(tmp_path):
    common = ["label", "--data", "examples", "--format", "examples", "--limit", "2", "--quiet"]
    direct = run(*common, "--direct", "--out", str(tmp_path / "direct.jsonl"))
    assert direct.returncode == 0, direct.stderr
    rows = [json.loads(line) for line in (tmp_path / "direct.jsonl").read_text().splitlines()]
    assert all(1 <= r["score_1"] <= 10 and 1 <= r["score_2"] <= 10 for r in rows)
    assert rows[0]["template"] == "instruction/direct-score"
    shots = run(*common, "--shots", "1", "--preamble", "base,principle_1", "--out", str(tmp_path / "shots.jsonl"))
    assert shots.returncode == 0, shots.stderr
    rows = [json.loads(line) for line in (tmp_path / "shots.jsonl").read_text().splitlines()]
    assert all(r["preambles"] == ["base", "principle_1"] and r["prompting"]["shots"] == 1 for r in rows)


def test_html_report_is_self_contained_with_every_plot(tmp_path):
    out = tmp_path / "labels.jsonl"
    label_pairs(load_pairs(None, "examples"), FakeBackend(), PromptTemplate("instruction"), out=out, progress=False)
    result = run("report", str(out), "--html", str(tmp_path / "report.html"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4  # alignment, reliability, position, length
    for alt in ("alignment per group", "reliability diagram", "position bias", "length bias"):
        assert f'alt="{alt}"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


def test_compare_two_runs_with_mcnemar(tmp_path):
    from rlaif import metrics
    from rlaif.label_store import read_labels

    pairs = load_pairs(None, "examples")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    label_pairs(pairs, FakeBackend(), PromptTemplate("instruction"), out=a, progress=False)
    label_pairs(pairs[:20], FakeBackend(first_bias=3.0), PromptTemplate("instruction"), out=b, progress=False)
    result = run("compare", str(a), str(b), "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    want = metrics.labeler_agreement(read_labels(a), read_labels(b))
    assert got["common_pairs"] == 20 and got["mcnemar_p"] == pytest.approx(want["mcnemar_p"])
    text = run("compare", str(a), str(b)).stdout
    assert "McNemar" in text and "common pairs             20" in text


@pytest.mark.model
def test_shards_from_the_command_line_merge_into_the_whole_job(tmp_path):
    """Two `rlaif label --shard i/2` runs (sharing one score cache), merged, give the unsharded job's rows."""
    common = ["label", "--data", str(HH), "--format", "hh-rlhf", "--limit", "5", "--quiet",
              "--cache", str(tmp_path / "scores.sqlite")]
    for i in (1, 2):
        done = run(*common, "--shard", f"{i}/2", "--out", str(tmp_path / f"shard{i}.jsonl"))
        assert done.returncode == 0, done.stderr
    shard_rows = [json.loads(line) for i in (1, 2) for line in (tmp_path / f"shard{i}.jsonl").read_text().splitlines()]
    assert [r["shard"] for r in shard_rows] == ["1/2"] * 2 + ["2/2"] * 3
    merged = run("merge", str(tmp_path / "shard2.jsonl"), str(tmp_path / "shard1.jsonl"),
                 "--out", str(tmp_path / "all.jsonl"))
    assert merged.returncode == 0, merged.stderr
    whole = run(*common, "--out", str(tmp_path / "whole.jsonl"))
    assert whole.returncode == 0, whole.stderr
    rows = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    strip = lambda row: {k: v for k, v in row.items() if k not in ("shard", "shard_pairs")}  # noqa: E731
    assert [strip(r) for r in rows] == expected
    assert "(10 prompts from the score cache, 0 scored)" in whole.stderr
