"""Policy training through TRL on a tiny random Llama: DPO datasets, the soft-label DPO loss against
TRL's own and at its optimum, online RL with a reward callable, and the over-optimisation monitor."""

import math

import pytest
import torch

pytest.importorskip("trl")

from datasets import load_from_disk  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from rlaif.backends.prompt_tokens import load_tokenizer  # noqa: E402
from rlaif.training.policy_training import SoftLabelDPOTrainer, dpo_dataset, train_online  # noqa: E402
from rlaif.training.preference_targets import PreferenceTarget  # noqa: E402
from rlaif.training.rl_monitor import RewardCurve, sample_with_kl, sequence_logps  # noqa: E402


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A tiny random causal LM with SmolLM2's tokenizer, saved as a folder: TRL reloads the reference from it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("policy") / "tiny"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def dpo_args(tmp_path, **overrides):
    settings = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none", "save_strategy": "no",
                "bf16": False, "per_device_train_batch_size": 4, "max_length": 64, "beta": 0.1, "seed": 0,
                "logging_steps": 1, **overrides}
    return DPOConfig(**settings)


TARGETS = [PreferenceTarget("\n\nHuman: hi\n\nAssistant:", " Hello there.", " Go away.", 0.8),
           PreferenceTarget("\n\nHuman: help?\n\nAssistant:", " No.", " Sure, how can I help?", 0.3),
           PreferenceTarget("\n\nHuman: 2+2?\n\nAssistant:", " 4", " 5", 1.0),
           PreferenceTarget("\n\nHuman: sky?\n\nAssistant:", " Green.", " Blue.", 0.0)]


def test_dpo_dataset_puts_the_favoured_response_first_and_round_trips(tmp_path):
    dataset = dpo_dataset(TARGETS)
    assert dataset.column_names == ["prompt", "chosen", "rejected", "target"]
    assert dataset["chosen"] == [" Hello there.", " Sure, how can I help?", " 4", " Blue."]
    assert dataset["rejected"] == [" Go away.", " No.", " 5", " Green."]
    assert dataset["target"] == pytest.approx([0.8, 0.7, 1.0, 1.0])
    dataset.save_to_disk(tmp_path / "dpo")
    assert load_from_disk(tmp_path / "dpo").to_list() == dataset.to_list()


def test_soft_label_dpo_with_certain_targets_is_trl_sigmoid_dpo(tiny_policy, tmp_path):
    hard = [PreferenceTarget(t.context, t.response_1, t.response_2, round(t.p)) for t in TARGETS]
    dataset = dpo_dataset(hard)
    ours = SoftLabelDPOTrainer(model=tiny_policy, args=dpo_args(tmp_path / "a"), train_dataset=dataset)
    theirs = DPOTrainer(model=tiny_policy, args=dpo_args(tmp_path / "b"),
                        train_dataset=dataset.remove_columns("target"))
    with torch.no_grad():  # move the policy off the reference so that the margins are not all 0
        for parameter in list(ours.model.parameters()) + list(theirs.model.parameters()):
            parameter.add_(0.05 * torch.sin(torch.arange(parameter.numel(), dtype=torch.float32)).view_as(parameter))
    batch_ours = ours.data_collator([ours.train_dataset[i] for i in range(4)])
    batch_theirs = theirs.data_collator([theirs.train_dataset[i] for i in range(4)])
    assert batch_ours["target"].tolist() == [1.0] * 4
    with torch.no_grad():
        loss_ours = float(ours.compute_loss(ours.model, dict(batch_ours)))
        loss_theirs = float(theirs.compute_loss(theirs.model, dict(batch_theirs)))
    assert loss_ours != pytest.approx(math.log(2), abs=1e-3)
    assert loss_ours == pytest.approx(loss_theirs, abs=1e-5)


def test_soft_label_dpo_stops_where_the_margin_matches_the_target(tiny_policy, tmp_path):
    """The optimum of -[p log σ(βΔ) + (1-p) log σ(-βΔ)] is βΔ = logit(p): training on one pair with
    p = 0.75 ends near logit(0.75) = 1.10, where a hard label would keep growing the margin."""
    target = [PreferenceTarget("\n\nHuman: hi\n\nAssistant:", " Hello there.", " Go away.", 0.75)]
    trainer = SoftLabelDPOTrainer(model=tiny_policy, train_dataset=dpo_dataset(target),
                                  args=dpo_args(tmp_path, per_device_train_batch_size=1, max_steps=150,
                                                learning_rate=3e-3, lr_scheduler_type="constant", beta=1.0))
    trainer.train()
    margins = [entry["rewards/margins"] for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert margins[0] == pytest.approx(0.0, abs=1e-6)
    assert sum(margins[-10:]) / 10 == pytest.approx(math.log(3), abs=0.15)


def test_the_kl_estimate_is_zero_for_the_reference_and_matches_unpadded_passes(tiny_policy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    reference = AutoModelForCausalLM.from_pretrained(tiny_policy).eval()
    policy = AutoModelForCausalLM.from_pretrained(tiny_policy).eval()
    prompts = ["\n\nHuman: a short one\n\nAssistant:", "\n\nHuman: a much longer prompt than the first one, with more"
               " words in it\n\nAssistant:"]
    texts, log_ratio, lengths, _ = sample_with_kl(reference, reference, tokenizer, prompts, max_new_tokens=6, seed=0)
    assert log_ratio.tolist() == [0.0, 0.0] and lengths.tolist() == [6, 6] and len(texts) == 2
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.mul_(1.2)
    samples = sample_with_kl(policy, reference, tokenizer, prompts, max_new_tokens=6, seed=0)
    for prompt, completion, estimate in zip(prompts, samples.completion_ids, samples.log_ratio):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids, prompt_length = torch.tensor([prompt_ids + completion]), len(prompt_ids)
        mask = torch.zeros_like(ids)
        mask[:, prompt_length:] = 1
        with torch.no_grad():
            alone = (sequence_logps(policy, ids, torch.ones_like(ids), mask)
                     - sequence_logps(reference, ids, torch.ones_like(ids), mask))
        assert float(estimate) == pytest.approx(float(alone), abs=1e-4)
    assert samples.log_ratio.abs().sum() > 0


def test_measuring_and_sampling_leave_the_callers_random_state_alone(tiny_policy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import rlaif

    model = AutoModelForCausalLM.from_pretrained(tiny_policy)
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    curve = RewardCurve(["\n\nHuman: hi\n\nAssistant:"], length_reward, {},
                        AutoModelForCausalLM.from_pretrained(tiny_policy), tokenizer, max_new_tokens=3, seed=7)
    backend = rlaif.TransformersBackend(model, tokenizer, name="tiny")
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    curve.measure(model, 0)
    backend.generate(["\n\nHuman: hi\n\nAssistant:"], temperature=1.0, max_new_tokens=3, seed=11)
    assert torch.equal(torch.rand(4), expected)


def length_reward(prompts, completions, **kwargs):
    """Longer completions score higher: a reward a policy can learn in a few steps."""
    return [float(len(completion)) for completion in completions]


@pytest.mark.parametrize("trainer", ["grpo", "rloo"])
def test_online_rl_calls_the_reward_and_the_monitor_records_the_curve(tiny_policy, tmp_path, trainer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = [f"\n\nHuman: question {i}\n\nAssistant:" for i in range(4)]
    calls = []

    def reward(prompts, completions, **kwargs):
        calls.append(len(completions))
        return length_reward(prompts, completions)

    reward.__name__ = "length"
    curve = RewardCurve(prompts[:2], reward, {"gold": length_reward},
                        AutoModelForCausalLM.from_pretrained(tiny_policy), AutoTokenizer.from_pretrained(tiny_policy),
                        every=1, max_new_tokens=5, seed=0)
    model, log = train_online(tiny_policy, reward, prompts, trainer=trainer, output_dir=tmp_path, callbacks=[curve],
                              settings={"num_generations": 2, "per_device_train_batch_size": 2,
                                        "max_completion_length": 5, "max_steps": 2, "beta": 0.05,
                                        "learning_rate": 1e-3, "seed": 0, "bf16": True})  # the wrapper case below
    assert list(log["step"]) == [1, 2] and log["rewards/length/mean"].notna().all()
    table = curve.table()
    assert list(table["step"]) == [0, 1, 2]
    assert table.loc[0, "kl"] == 0.0  # the policy is its own reference before the first update
    assert table.loc[2, "kl"] != 0.0
    for row in table.itertuples():  # the recorded rewards are the rewards of the recorded samples
        texts = [s["completion"] for s in curve.samples if s["step"] == row.step]
        assert row.proxy == pytest.approx(sum(map(len, texts)) / len(texts))
        assert getattr(row, "_4") == pytest.approx(row.proxy)  # gold/gold column
    assert sum(calls) >= 2 * 4  # TRL called the reward on its own generations too
    # the returned model runs in its own dtype, like the untrained policy it is compared with
    plain = AutoModelForCausalLM.from_pretrained(tiny_policy)
    plain.load_state_dict(model.state_dict())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_an_exported_preference_dataset_trains_one_dpo_step_in_trl(tiny_policy, tmp_path, conversational):
    """`rlaif export`'s dataset, as saved to disk, goes straight into TRL's DPOTrainer (extra columns and all)."""
    import pandas as pd

    from rlaif.export import preference_dataset
    from rlaif.labels_table import pointwise_row
    from rlaif.pairs import PreferencePair

    pairs = [PreferencePair(f"p{i}", t.context, t.response_1, t.response_2, 1 if i % 2 else 2)
             for i, t in enumerate(TARGETS)]
    labels = pd.DataFrame([pointwise_row(pair, {"run_id": "r"}, 1.0 if i % 3 else -1.0, 0.0, names=("s1", "s2"))
                           for i, pair in enumerate(pairs)])
    preference_dataset(labels, pairs, conversational=conversational).save_to_disk(tmp_path / "exported")
    dataset = load_from_disk(tmp_path / "exported")
    assert len(dataset) == 4 and isinstance(dataset[0]["prompt"], list) == conversational
    trainer = DPOTrainer(model=tiny_policy, args=dpo_args(tmp_path / "run", max_steps=1), train_dataset=dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 1 and math.isfinite(losses[0])
