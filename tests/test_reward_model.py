"""Reward models: the loss against hand-computed values, training that moves a tiny model toward its
targets, save/load, targets from labels, and the model as a reward function and as a labeler."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rlaif.analysis.report import analyze
from rlaif.backends.prompt_tokens import load_tokenizer
from rlaif.pairs import PreferencePair
from rlaif.training.reward_model import (
    PreferenceTarget,
    RewardModel,
    RewardTrainingConfig,
    _batches,
    preference_loss,
    ranking_targets,
    reward_model_labels,
    targets_from_labels,
    train_reward_model,
)


def sp(x):  # softplus: -log sigmoid(-x)
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("p, margin, center, expected", [
    (1.0, 0.0, 0.0, sp(-1.0)),                                  # Bradley-Terry: -log sigmoid(1)
    (0.0, 0.0, 0.0, sp(1.0)),
    (0.5, 0.0, 0.0, 0.5 * sp(-1.0) + 0.5 * sp(1.0)),
    (0.8, 0.0, 0.0, 0.8 * sp(-1.0) + 0.2 * sp(1.0)),
    (1.0, 1.0, 0.0, math.log(2)),                                # margin 1 eats the difference of 1
    (1.0, 0.0, 0.5, sp(-1.0) + 0.5 * 1.0 ** 2),                  # (r1 + r2)^2 = 1
])
def test_preference_loss_matches_hand_computed_values(p, margin, center, expected):
    loss = preference_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([p]), margin=margin,
                           center_weight=center)
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_soft_label_loss_is_smallest_where_the_reward_gap_matches_the_label():
    gaps = torch.linspace(-4, 4, 801)
    losses = torch.stack([preference_loss(g.view(1), torch.zeros(1), torch.tensor([0.8])) for g in gaps])
    assert float(gaps[losses.argmin()]) == pytest.approx(math.log(0.8 / 0.2), abs=0.01)


def test_a_ranking_becomes_all_its_pairs_in_one_batch():
    targets = ranking_targets("Q", ["best", "good", "ok", "bad"])
    assert [(t.response_1, t.response_2) for t in targets] == [
        ("best", "good"), ("best", "ok"), ("best", "bad"), ("good", "ok"), ("good", "bad"), ("ok", "bad")]
    mixed = targets + [PreferenceTarget(f"other {i}", "a", "b", 1.0, group=f"other {i}") for i in range(5)]
    import random
    for batch in _batches(mixed, 3, random.Random(0)):
        groups = {mixed[i].group for i in batch}
        assert "Q" not in groups or all(i in batch for i in range(6))


def test_targets_from_labels_by_source_and_confidence():
    pairs = [PreferencePair(str(i), "c", "x", "y", human_choice=h) for i, h in enumerate([1, 2, 0, None])]
    labels = pd.DataFrame({"id": ["0", "1", "2", "3"], "p": [0.9, 0.45, 0.5, None]})
    assert [t.p for t in targets_from_labels(labels, pairs, "ai_soft")] == [0.9, 0.45, 0.5]
    assert [t.p for t in targets_from_labels(labels, pairs, "ai_hard")] == [1.0, 0.0]
    assert [t.p for t in targets_from_labels(labels, pairs, "human")] == [1.0, 0.0]
    assert [t.p for t in targets_from_labels(labels, pairs, "ai_soft", min_confidence=0.1)] == [0.9]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m")


def tiny_rm(tokenizer, seed=0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1)
    return RewardModel(LlamaForSequenceClassification(config).eval(), tokenizer, name="tiny")


def toy(n, seed, prefer="helpful"):
    """Pairs where the response with the word ``prefer`` is preferred (p = 0.9), in a random position."""
    rng = np.random.default_rng(seed)
    words = ["apple", "river", "stone", "cloud", "paper", "green", "quick", "table"]
    targets = []
    for i in range(n):
        filler = " ".join(rng.choice(words, 4))
        good, bad = [f"A {kind} answer: {filler}." for kind in (prefer, "helpful" if prefer == "rude" else "rude")]
        first = rng.random() < 0.5
        targets.append(PreferenceTarget(f"Question {i}:", *(good, bad) if first else (bad, good), 0.9 if first else 0.1,
                                        group=f"q{i}"))
    return targets


@pytest.mark.parametrize("trainable, lr", [("all", 3e-3), ("head", 3e-2)])
def test_training_on_soft_labels_moves_a_tiny_model_toward_the_targets(tokenizer, trainable, lr):
    """The same initial model, trained on opposite preferences, ends up agreeing with each on held-out
    pairs: training moved it (no initial model can agree with both)."""
    config = RewardTrainingConfig(trainable=trainable, epochs=15, batch_size=8, learning_rate=lr, seed=0, max_length=64)
    for prefer in ("helpful", "rude"):
        rm = tiny_rm(tokenizer)
        history = train_reward_model(rm, toy(48, 1, prefer), config=config, labels_source="ai_soft",
                                     evaluate=toy(24, 2, prefer), progress=False)
        assert history[0]["epoch"] == 0 and history[-1]["epoch"] == 15
        assert history[-1]["train_loss"] < history[1]["train_loss"]
        assert history[-1]["eval_loss"] < history[0]["eval_loss"]
        assert history[-1]["eval_accuracy"] >= 0.95
        held_out = toy(24, 3, prefer)
        gap = rm.rewards([t.context for t in held_out], [t.response_1 for t in held_out]) - \
            rm.rewards([t.context for t in held_out], [t.response_2 for t in held_out])
        assert np.mean(np.sign(gap) == np.sign([t.p - 0.5 for t in held_out])) >= 0.95


def test_training_is_seeded(tokenizer):
    config = RewardTrainingConfig(trainable="all", epochs=2, batch_size=8, learning_rate=3e-3, seed=7, max_length=64)
    runs = []
    for _ in range(2):
        rm = tiny_rm(tokenizer)
        train_reward_model(rm, toy(16, 1), config=config, labels_source="human", progress=False)
        runs.append(rm.rewards(["Q:"], [" A helpful answer."]))
    assert runs[0] == pytest.approx(runs[1], abs=0)


def test_save_load_round_trip_and_reward_function_convention(tokenizer, tmp_path):
    rm = tiny_rm(tokenizer)
    config = RewardTrainingConfig(trainable="head", epochs=2, batch_size=8, learning_rate=1e-2, max_length=64)
    train_reward_model(rm, toy(16, 1), config=config, labels_source="ai_soft", progress=False, features={})
    assert rm.feature_cache  # rm's rewards below come from cached backbone features, the loaded one's fresh
    path = rm.save(tmp_path / "rm")
    loaded = RewardModel.load(path)
    contexts, responses = ["Question 1:", "Question 2:"], ["A helpful answer.", "A rude answer."]
    np.testing.assert_allclose(loaded.rewards(contexts, responses), rm.rewards(contexts, responses), atol=1e-6)
    # the saved model is a plain transformers reward model: its own forward gives the same rewards
    from rlaif.training.reward_model import reward_text
    with torch.no_grad():
        logits = loaded.model(**loaded._encode([reward_text(c, r) for c, r in zip(contexts, responses)])).logits
    np.testing.assert_allclose(logits.squeeze(-1).numpy(), rm.rewards(contexts, responses), atol=1e-5)
    assert loaded.info["labels_source"] == "ai_soft" and loaded.info["train_pairs"] == 16
    assert loaded.info["data_hash"] == rm.info["data_hash"] and loaded.max_length == 64
    as_chat = [[{"role": "user", "content": "Question 1:"}]]
    assert (loaded(prompts=contexts, completions=responses)
            == pytest.approx(list(rm.rewards(contexts, responses)), abs=1e-6))
    assert (loaded(prompts=as_chat, completions=["A helpful answer."])
            == pytest.approx([rm.rewards(contexts, responses)[0]], abs=1e-6))
    with pytest.raises(FileNotFoundError, match="not a reward model saved by rlaif"):
        RewardModel.load(tmp_path)


def test_a_reward_model_labels_pairs_for_the_report(tokenizer):
    rm = tiny_rm(tokenizer)
    pairs = [PreferencePair(str(i), f"Question {i}:", " yes", " no", human_choice=1 + i % 2) for i in range(6)]
    labels = reward_model_labels(pairs, rm)
    gap = labels["reward_1"] - labels["reward_2"]
    np.testing.assert_allclose(labels["p"], 1 / (1 + np.exp(-gap)))
    summary = analyze(labels)
    assert summary["pairs"] == 6 and summary["position_bias"]["same_position_both_orders"] == 0.0


def test_mixed_precision_features_multiply_in_bf16_and_stay_near_the_exact_ones(tokenizer, tmp_path):
    """feature_precision="mixed" (the default of from_backbone on a CPU with bf16 units): the backbone's
    products run in bf16, the feature the head reads is fp32 and close to the exact one."""
    rm = tiny_rm(tokenizer)
    texts = ["Question: hi\n\nAnswer: hello there, how can I help?", "Question: 2+2?\n\nAnswer: 4"]
    exact = rm.features(texts)
    rm.feature_precision = "mixed"
    seen = []
    hook = rm.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        mixed = rm.features(texts)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert mixed.dtype == torch.float32 and not torch.equal(mixed, exact)
    assert (mixed - exact).abs().max() < 0.05 * exact.abs().max()
    with pytest.raises(ValueError, match="feature_precision"):
        RewardModel(rm.model, tokenizer, name="tiny", feature_precision="bfloat16")
    # a saved head is read with the features it was trained on; a tuned backbone in its own precision
    config = RewardTrainingConfig(trainable="head", epochs=1, batch_size=8, learning_rate=1e-2, max_length=64)
    train_reward_model(rm, toy(8, 1), config=config, labels_source="ai_soft", progress=False)
    loaded = RewardModel.load(rm.save(tmp_path / "rm"))
    assert loaded.feature_precision == "mixed"
    np.testing.assert_allclose(loaded.rewards(["Q:"], ["A helpful answer."]), rm.rewards(["Q:"], ["A helpful answer."]),
                               atol=1e-6)
    train_reward_model(rm, toy(8, 1),
                       config=RewardTrainingConfig(trainable="all", epochs=1, batch_size=8, max_length=64),
                       labels_source="ai_soft", progress=False)
    assert rm.feature_precision == "float32"


def test_loaded_head_only_rms_on_one_backbone_share_their_features(tmp_path):
    from rlaif.training.reward_model import load_reward_models

    tokenizer = load_tokenizer("smollm2-135m")
    paths, alone = {}, {}
    for name, prefer in (("a", "helpful"), ("b", "rude"), ("tuned", "helpful")):
        rm = tiny_rm(tokenizer, seed=0)  # the same backbone for all three
        rm.info["backbone"] = "tiny"
        train_reward_model(rm, toy(16, seed=1, prefer=prefer), labels_source="test", progress=False,
                           config=RewardTrainingConfig(epochs=3, trainable="all" if name == "tuned" else "head",
                                                       max_length=64))
        paths[name] = rm.save(tmp_path / name)
    for name, path in paths.items():
        alone[name] = RewardModel.load(path).rewards(["Q"] * 2, ["A helpful answer.", "A rude answer."])
    models = load_reward_models(paths)
    assert models["a"].feature_cache is models["b"].feature_cache is not None
    assert models["tuned"].feature_cache is None  # its backbone moved: its features are its own
    for name, rm in models.items():
        np.testing.assert_allclose(rm.rewards(["Q"] * 2, ["A helpful answer.", "A rude answer."]), alone[name],
                                   rtol=1e-5, atol=1e-6)
    assert len(models["a"].feature_cache) == 2  # b read a's features
