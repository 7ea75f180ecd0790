"""experiments/label_quality.py: the split, that nothing fitted sees an evaluation row, and a tiny real run."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_debiasing import biased_labeler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import label_quality  # noqa: E402

from rlaif.analysis import label_methods  # noqa: E402
from rlaif.pairs import PreferencePair  # noqa: E402


def synthetic_passes(n=60, seed=0):
    """Passes of a labeler with a position prior on top of real signal, and 1-10 scores that follow it."""
    rng = np.random.default_rng(seed)
    content = rng.uniform(0.05, 0.95, n)
    human = np.where(rng.random(n) < content, 1, 2).astype(float)
    passes = label_quality.Passes()
    for name, prior in [("plain", [0.8, 0.2]), ("words:letters", [0.3, 0.7])]:
        first, swapped = biased_labeler(prior, content)
        free, _ = biased_labeler(prior, np.full(4, 0.5))
        passes.pairwise[name] = label_quality.PairPass(first, swapped, free, seconds=float(n), asks_more_harmful=False)
    passes.scores = np.column_stack([5 + 3 * content + rng.normal(0, 0.5, n), 5 + 3 * (1 - content)])
    passes.score_seconds = float(n)
    return passes, human


def test_split_is_seeded_and_disjoint():
    fit = label_quality.split(10, 0.5, seed=3)
    assert fit.sum() == 5 and (label_quality.split(10, 0.5, seed=3) == fit).all()
    assert not (label_quality.split(10, 0.5, seed=4) == fit).all()
    pairs = [PreferencePair(f"p{i}", f"context {i}", "a", "b", 1) for i in range(10)]
    free = label_quality.content_free_pairs(pairs, fit, contexts=3, fillers=["N/A", ""], seed=0)
    fit_contexts = {pairs[i].context for i in np.flatnonzero(fit)}
    assert len(free) == 6 and {p.context for p in free} <= fit_contexts
    assert all(p.response_1 == p.response_2 for p in free) and {p.response_1 for p in free} == {"N/A", ""}


@pytest.mark.parametrize("name", ["label_quality.yaml", "label_quality_1.5b.yaml", "label_quality_hh_1.5b.yaml"])
def test_shipped_configs_load_and_command_line_overrides_win(name):
    path = str(REPO / "experiments" / name)
    config = label_quality.load_config(["--config", path])
    assert set(config) == set(label_quality.CONFIG_SCHEMA) and set(config["datasets"]) <= set(label_quality.DATASETS)
    again = label_quality.load_config(["--config", path, "--models", "a", "b", "--datasets", "hhh-helpful",
                                       "--limit", "7"])
    assert again["models"] == ["a", "b"] and again["datasets"] == ["hhh-helpful"] and again["limit"] == 7
    with pytest.raises(SystemExit, match="unknown datasets"):
        label_quality.load_config(["--config", path, "--datasets", "nope"])


def test_a_bad_technique_is_refused_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": ["m"], "datasets": ["llmbar-natural"],
                                   "techniques": {"two": {"shotz": 2}}}))
    with pytest.raises(SystemExit, match=r"bad.yaml: unknown key 'techniques.two.shotz' \(did you mean 'shots'\?\)"):
        label_quality.load_config(["--config", str(bad)])
    bad.write_text(yaml.safe_dump({"models": ["m"], "datasets": ["llmbar-natural"],
                                   "techniques": {"two": {"shots": -2}}}))  # a known key with a bad value
    with pytest.raises(SystemExit, match=r"bad.yaml: techniques.two: shots must be >= 0"):
        label_quality.load_config(["--config", str(bad)])


def test_fitting_never_sees_evaluation_rows():
    passes, human = synthetic_passes()
    fit = label_quality.split(len(human), 0.5, seed=0)
    found = label_quality.methods(passes, human, fit, pride_sample=8, seed=0)
    cv = label_quality.cross_validated_alignment(passes, human, fit, pride_sample=8, seed=0)
    found.update(label_quality.choose_best(found, cv, human, fit, min_coverage=0.5))
    flipped = human.copy()
    flipped[~fit] = 3 - flipped[~fit]   # every evaluation label reversed
    again = label_quality.methods(passes, flipped, fit, pride_sample=8, seed=0)
    cv_again = label_quality.cross_validated_alignment(passes, flipped, fit, pride_sample=8, seed=0)
    again.update(label_quality.choose_best(again, cv_again, flipped, fit, min_coverage=0.5))
    assert found.keys() == again.keys() and cv == cv_again
    for name in found:
        np.testing.assert_array_equal(found[name].p, again[name].p, err_msg=name)
        assert found[name].fitted == again[name].fitted, name
    # while the fitting labels do matter to what is fitted
    moved = human.copy()
    moved[fit] = 3 - moved[fit]
    changed = label_quality.methods(passes, moved, fit, pride_sample=8, seed=0)
    assert changed["pointwise"].fitted != found["pointwise"].fitted


def test_methods_remove_the_prior_and_report_costs():
    passes, human = synthetic_passes(n=200)
    fit = label_quality.split(len(human), 0.5, seed=0)
    skipped = np.flatnonzero(~fit)[:2]  # two evaluation rows the labeler could not label (too long, say)
    for run in passes.pairwise.values():
        run.logprobs_first[skipped] = np.nan
        run.logprobs_swapped[skipped] = np.nan
    found = label_quality.methods(passes, human, fit, pride_sample=16, seed=0)
    assert (json.loads(json.dumps(found["plain+cal"].fitted))["content_free_prior"]
            == pytest.approx([0.8, 0.2], abs=1e-4))
    assert found["pride"].fitted["position_prior"] == pytest.approx([0.8, 0.2], abs=1e-4)
    rows = {name: label_quality.evaluate(m, human, fit, found["plain"]) for name, m in found.items()}
    # with the prior divided out each order alone agrees with the other: full position consistency
    assert rows["plain+cal"]["position_consistency"] == 1.0 and rows["pride"]["position_consistency"] == 1.0
    assert rows["pride"]["prompts_per_pair"] == pytest.approx(1 + 16 / 200) and rows["plain"]["prompts_per_pair"] == 2
    assert found["pride"].fitted["prompts_saved"] == pytest.approx(1 - (200 + 16) / 400)
    # calibration adds its content-free prompts (4 here), spread over the pairs
    assert rows["plain+cal"]["prompts_per_pair"] == pytest.approx(2 + 4 / 200)
    assert rows["plain"]["eval_pairs"] == 98 and rows["plain"]["coverage"] == 1.0  # the skipped rows are not scored
    assert rows["plain"]["ci_low"] <= rows["plain"]["alignment"] <= rows["plain"]["ci_high"]
    assert rows["pride"]["agrees_with_swap"] > 0.9
    assert rows["plain"]["gain_vs_plain"] == rows["plain"]["gain_low"] == 0.0
    right = lambda m: (m.p[~fit] > 0.5) == (human[~fit] == 1)  # noqa: E731 (no eval p is exactly 0.5 here)
    ok = np.isfinite(found["plain"].p[~fit])
    assert rows["pointwise"]["gain_vs_plain"] == pytest.approx(np.mean(right(found["pointwise"])[ok])
                                                               - np.mean(right(found["plain"])[ok]))
    cv = label_quality.cross_validated_alignment(passes, human, fit, pride_sample=16, seed=0)
    best = label_quality.choose_best(found, cv, human, fit, min_coverage=0.5)
    assert best["best"].fitted["chosen"] == max(cv, key=lambda k: (cv[k], -found[k].prompts_per_pair))
    abstain = label_quality.evaluate(best["best+abstain"], human, fit, found["plain"])
    assert 0.3 <= abstain["coverage"] <= 1.0 and best["best+abstain"].fitted["chosen"] in found


def test_best_is_chosen_out_of_fold():
    """With human labels unrelated to the labeler, a stack fitted on the fitting part fits their noise:
    in-sample it looks better than it is, out of fold it does not. Choosing by the in-sample number
    would favour the stack."""
    in_sample, out_of_fold = [], []
    for seed in range(4):
        passes, _ = synthetic_passes(n=60, seed=seed)
        human = np.where(np.random.default_rng(100 + seed).random(60) < 0.5, 1, 2).astype(float)
        fit = label_quality.split(60, 0.5, seed=0)
        found = label_quality.methods(passes, human, fit, pride_sample=8, seed=0)
        cv = label_quality.cross_validated_alignment(passes, human, fit, pride_sample=8, seed=0)
        in_sample.append(label_methods.alignment_of(found["ensemble:all:fitted"].p[fit], human[fit]))
        out_of_fold.append(cv["ensemble:all:fitted"])
        # a method that fits nothing labels every pair the same in or out of fold
        assert cv["plain"] == label_methods.alignment_of(found["plain"].p[fit], human[fit])
    assert np.mean(out_of_fold) < np.mean(in_sample) - 0.05


@pytest.mark.model
def test_label_quality_end_to_end_on_a_tiny_configuration(tmp_path, shared_data):
    config = {"models": ["smollm2-135m"], "datasets": ["llmbar-natural", "hh-rlhf-harmless"],
              "data_root": str(shared_data), "skip": 2, "limit": 8, "fit_fraction": 0.5, "content_free_contexts": 1,
              "content_free": ["N/A"], "pride_sample": 4, "label_words": {"letters": {"labels": ["A", "B"]}},
              "preambles": ["base"], "techniques": {"one_shot": {"shots": 1}}, "results": str(tmp_path / "results")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    import rlaif

    backends = {"smollm2-135m": rlaif.TransformersBackend.from_pretrained("smollm2-135m")}  # loaded once for both runs
    table = label_quality.main(["--config", str(tmp_path / "config.yaml")], backends=backends)
    results = tmp_path / "results"
    expected = {"plain", "plain+cal", "length_control", "words:letters", "words:letters+cal",
                "calibrated_swap", "pride", "pointwise",
                "ensemble:words", "ensemble:words:fitted", "ensemble:methods", "ensemble:methods:fitted",
                "ensemble:all", "ensemble:all:fitted", "best", "best+abstain", "technique:one_shot",
                "technique:one_shot+cal", "ensemble:techniques", "ensemble:techniques:fitted"}
    for dataset in config["datasets"]:
        part = table[table["dataset"] == dataset]
        assert set(part["method"]) == expected
        assert (part["eval_pairs"] == 4).all()
        assert ((part["ci_low"] <= part["alignment"]) & (part["alignment"] <= part["ci_high"])).all()
    written = json.loads((results / "config.json").read_text())
    for name, split in written["splits"].items():
        assert (len(split["fit_ids"]) == len(split["eval_ids"]) == 4
                and not set(split["fit_ids"]) & set(split["eval_ids"]))
        fmt, relative, _ = label_quality.DATASETS[name]
        file_pairs = rlaif.load_pairs(shared_data / relative, fmt, limit=10)
        assert set(split["fit_ids"]) | set(split["eval_ids"]) == {p.id for p in file_pairs[2:]}  # skip: 2
    assert len(pd.read_csv(results / "table.csv")) == len(table)
    shot_rows = [json.loads(line) for line in (results / "raw" / "smollm2-135m" / "llmbar-natural" /
                                               "technique_one_shot.jsonl").read_text().splitlines()]
    assert shot_rows and all(row["prompting"]["shots"] == 1 for row in shot_rows if "id" in row)
    assert (results / "plots" / "abstention.png").is_file()
    assert len(list((results / "plots").glob("alignment_*.png"))) == 2
    # resumed: a second run reads every pass from disk and gives the same table
    again = label_quality.main(["--config", str(tmp_path / "config.yaml")], backends=backends)
    pd.testing.assert_frame_equal(table.drop(columns="seconds_per_pair"), again.drop(columns="seconds_per_pair"))


def test_the_length_control_is_fitted_on_lengths_and_never_chosen_as_best():
    passes, human = synthetic_passes(n=120)
    fit = label_quality.split(len(human), 0.5, seed=0)
    # people always prefer the shorter response: length alone is right on every pair
    short = np.where(human == 1, 10.0, 100.0)
    passes.lengths = np.column_stack([short, 110.0 - short])
    found = label_quality.methods(passes, human, fit, pride_sample=8, seed=0)
    control = found[label_methods.LENGTH_CONTROL]
    assert control.fitted["slope"] < 0 and control.prompts_per_pair == 0
    assert label_methods.alignment_of(control.p[~fit], human[~fit]) == 1.0
    cv = label_quality.cross_validated_alignment(passes, human, fit, pride_sample=8, seed=0)
    assert cv[label_methods.LENGTH_CONTROL] == 1.0 > max(v for k, v in cv.items() if k != label_methods.LENGTH_CONTROL)
    best = label_quality.choose_best(found, cv, human, fit, min_coverage=0.5)
    assert best["best"].fitted["chosen"] != label_methods.LENGTH_CONTROL
    assert found["ensemble:methods"].fitted["members"] == 3  # plain+cal, calibrated_swap, pointwise: no length
