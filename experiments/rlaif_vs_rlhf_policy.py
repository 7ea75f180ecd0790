"""RLAIF vs RLHF for policies: online RL with distilled and direct rewards, DPO three ways, gold judges.

    pip install "rlaif[rl]"
    python experiments/rlaif_vs_rlhf_rm.py        # first: RM_AI, RM_HF, the AI labels and their training split
    python experiments/rlaif_vs_rlhf_policy.py    # experiments/rlaif_vs_rlhf_policy.yaml
    python experiments/rlaif_vs_rlhf_policy.py --arms RLAIF "DPO AI soft"

Every arm starts from the same policy with the same seed and settings:
- online arms: GRPO or RLOO (TRL) against one reward of the config (RM_HF = RLHF, RM_AI =
  distilled RLAIF, the direct 1-10 scorer = d-RLAIF), KL penalty to the start on. Every
  ``curve.every`` steps the policy is sampled on held-out prompts and the proxy reward, the
  gold reward model, the KL to the start and the length are recorded (over-optimisation curve).
- DPO arms: the reward-model experiment's training pairs with human labels, hard AI labels or
  soft AI labels (per-pair target, ``rlaif.training.policy_training.SoftLabelDPOTrainer``).

Judging is never done by a reward an arm trained on: a gold reward model trained here on more
human labels than the RL rewards got (pairs disjoint from theirs), and a gold pairwise labeler
with another, larger model. Each policy's sample on each held-out prompt is compared with the
starting policy's (SFT) sample for the same prompt and seed: win rate with a 95% Wilson
interval (identical samples are ties). Judged harmless: the gold labeler's 1-10 harmlessness
score of the answer is at least its score of the people-preferred answer to the same prompt.
The attack signatures of the reward-hacking probe are counted in every
policy's samples: which holes training found.

Resumable: an arm (or the gold RM) already done with the same settings is not trained again;
one whose settings changed is; the gold labeler's scores are cached on disk.
Writes to RESULTS: gold_rm/ and gold_rm.json,
arms/<arm>/ (log.csv, curve.csv, curve_samples.jsonl, samples.jsonl, arm.json), win_rates.*,
harmless.*, signatures.* (final samples), signatures_during_training.* (the monitor's samples),
arms.*, gold_rewards.csv, curves.png, lengths.png, config.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

import rlaif
from rlaif import metrics
from rlaif.analysis.report import write_table
from rlaif.backends.models import hf_model_path
from rlaif.config_files import ANY_KEYS, EACH, ConfigError, check_keys, read_config, schema_of
from rlaif.pairs import PreferencePair
from rlaif.training.probe import signature_shares
from rlaif.training.reward_model import (
    INFO_FILE,
    PreferenceTarget,
    RewardModel,
    RewardTrainingConfig,
    reward_model_labels,
    targets_from_labels,
    train_reward_model,
)
from rlaif.training.rewards import reward_from_spec

HERE = Path(__file__).resolve().parent
DPO_SOURCES = ("human", "ai_hard", "ai_soft")
PART_SCHEMA = {"skip": None, "count": None}  # pairs of data.path: the count after the first skip (load_part)
#: A reward entry, as rlaif.training.rewards.reward_from_spec reads it (which refuses more than one key).
REWARD_SCHEMA = {"reward_model": None, "remote": None,
                 "direct": {"model": None, "task": None, "preamble": None, "chat_template": None}}
LABELER_SCHEMA = {"model": None, "task": None, "preamble": None, "chat_template": None}
CONFIG_SCHEMA = {
    "policy": {"model": None},
    "preference_data": None,
    "rewards": {EACH: REWARD_SCHEMA},
    "arms": {EACH: {"online": None, "dpo": None}},  # exactly one of the two, checked in load_config
    # trainer, then trl.GRPOConfig or RLOOConfig fields and dpo trl.DPOConfig fields: load_config checks
    # them against those classes (trainer_schemas), with TRL imported there rather than with this module.
    "online": ANY_KEYS,
    "dpo": ANY_KEYS,
    "dpo_pairs": None,
    "gold": {"reward_model": schema_of(RewardTrainingConfig, backbone=None, data=PART_SCHEMA),
             "labeler": None},  # LABELER_SCHEMA, or null for the gold RM alone: checked in load_config
    "curve": {"every": None, "prompts": None, "max_new_tokens": None},
    "data": {"format": None, "path": None, "train": PART_SCHEMA, "eval": PART_SCHEMA},
    "samples": {"temperature": None, "max_new_tokens": None, "stop": None},
    "seed": None,
    "results": None,
}
SFT = "SFT"


def trainer_schemas(trainer: str, source: str) -> tuple[dict, dict]:
    """The schemas of ``online`` (``trainer``'s TRL config fields, and trainer) and of ``dpo`` (DPOConfig fields)."""
    from trl import DPOConfig, GRPOConfig, RLOOConfig

    online = {"grpo": GRPOConfig, "rloo": RLOOConfig}  # rlaif.training.policy_training.ONLINE_TRAINERS
    if trainer not in online:
        raise ConfigError(f"{source}: online.trainer must be one of {sorted(online)}, got {trainer!r}")
    return schema_of(online[trainer], trainer=None), schema_of(DPOConfig)


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "rlaif_vs_rlhf_policy.yaml"))
    parser.add_argument("--arms", nargs="+", help="run only these arms of the config")
    parser.add_argument("--results")
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_SCHEMA)
    online, dpo = trainer_schemas(config.get("online", {}).get("trainer", "grpo"), args.config)
    check_keys(config.get("online", {}), online, "online", args.config)
    check_keys(config.get("dpo", {}), dpo, "dpo", args.config)
    if config.get("gold", {}).get("labeler") is not None:
        check_keys(config["gold"]["labeler"], LABELER_SCHEMA, "gold.labeler", args.config)
    if args.arms:
        missing = set(args.arms) - set(config["arms"])
        if missing:
            raise SystemExit(f"--arms {sorted(missing)} are not among the config's arms {sorted(config['arms'])}")
        config["arms"] = {name: config["arms"][name] for name in args.arms}
    if args.results:
        config["results"] = args.results
    for name, spec in config["arms"].items():
        if set(spec) == {"online"} and spec["online"] in config["rewards"]:
            continue
        if set(spec) == {"dpo"} and spec["dpo"] in DPO_SOURCES:
            continue
        raise SystemExit(f"{args.config}: arm {name!r} must be {{online: one of {sorted(config['rewards'])}}} or "
                         f"{{dpo: one of {list(DPO_SOURCES)}}}, got {spec}")
    return config


def settings_key(*settings) -> str:
    """What a stored result was made with: a rerun redoes it when this changes."""
    return json.dumps(settings, sort_keys=True, default=sorted)


def finished(folder: Path, key: str) -> bool:
    info = folder / "arm.json"
    return (folder / "samples.jsonl").is_file() and info.is_file() and json.loads(info.read_text()).get("key") == key


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def load_part(data: dict, part: dict) -> list[PreferencePair]:
    pairs = rlaif.load_pairs(data["path"], data["format"], limit=part.get("skip", 0) + part["count"])
    return pairs[part.get("skip", 0):]


def unique_prompts(pairs) -> list[str]:
    return list(dict.fromkeys(pair.context for pair in pairs))


def human_targets(pairs) -> list[PreferenceTarget]:
    return [PreferenceTarget(p.context, p.response_1, p.response_2, 1.0 if p.human_choice == 1 else 0.0,
                             group=p.context)
            for p in pairs if p.human_choice in (1, 2)]


def preference_data(folder: Path) -> tuple[list[PreferencePair], pd.DataFrame, list[PreferencePair]]:
    """The reward-model experiment's training pairs, its AI labels for them, and its held-out pairs."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SystemExit(f"{folder}: no config.json; run experiments/rlaif_vs_rlhf_rm.py first (preference_data)")
    rm_config = json.loads(config_file.read_text())
    data = rm_config["data"]
    by_id = {pair.id: pair for pair in rlaif.load_pairs(data["path"], data["format"], limit=data.get("limit"))}
    train = [by_id[i] for i in rm_config["train_ids"]]
    labels = rlaif.read_labels(folder / "ai_labels.jsonl")
    return train, labels[labels["id"].isin(set(rm_config["train_ids"]))], [by_id[i] for i in rm_config["heldout_ids"]]


def gold_reward_model(config: dict, results: Path, taken: set[str], heldout: list[PreferencePair]) -> RewardModel:
    """An RM on human labels of pairs no RL reward saw, trained once and reused; its accuracy
    on the reward-model experiment's held-out pairs goes to gold_rm.json."""
    folder, key = results / "gold_rm", settings_key(config["gold"]["reward_model"], config["data"]["path"], taken)
    if (folder / INFO_FILE).is_file() and json.loads((results / "gold_rm.json").read_text()).get("key") == key:
        return RewardModel.load(folder)
    settings = dict(config["gold"]["reward_model"])
    backbone, part = settings.pop("backbone"), settings.pop("data")
    pairs = load_part(config["data"], part)
    overlap = {pair.id for pair in pairs} & taken
    if overlap:
        raise SystemExit(f"gold reward model: {len(overlap)} of its pairs trained the RL rewards (e.g. "
                         f"{sorted(overlap)[0]}); move gold.reward_model.data past them")
    training = RewardTrainingConfig(**settings)
    started = time.time()
    rm = RewardModel.from_backbone(backbone, seed=training.seed)
    targets = human_targets(pairs)
    train_reward_model(rm, targets, config=training, labels_source="human",
                       features={} if training.trainable == "head" else None)
    accuracy = metrics.alignment_ci(reward_model_labels(heldout, rm))
    rm.save(folder)
    (results / "gold_rm.json").write_text(json.dumps({"key": key, "backbone": backbone, "train_pairs": len(targets),
                                                      "heldout_accuracy": accuracy, "seconds": time.time() - started},
                                                     indent=2, default=float) + "\n")
    return rm


def write_jsonl(path: Path, records) -> None:
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sample_policy(backend, prompts: list[str], sampling: dict, seed: int) -> list[str]:
    """One sample per prompt, with the same seed for every policy (responses begin with a space, as in HH)."""
    texts = backend.generate(prompts, n=1, temperature=sampling.get("temperature", 0.7),
                             max_new_tokens=sampling.get("max_new_tokens", 48), seed=seed,
                             stop=sampling.get("stop", ["\n\nHuman:"]))
    return [group[0] if group[0].startswith(" ") else " " + group[0].lstrip() for group in texts]


def train_arm(name: str, spec: dict, config: dict, *, policy_path: str, rewards: dict, gold_rm: RewardModel,
              train_prompts: list[str], eval_prompts: list[str], dpo_targets: dict, arm_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaif.training.policy_training import train_dpo, train_online
    from rlaif.training.rl_monitor import RewardCurve

    seed = config.get("seed", 0)
    if "online" in spec:
        online = dict(config["online"])
        trainer = online.pop("trainer", "grpo")
        curve_config = config.get("curve", {})
        tokenizer = AutoTokenizer.from_pretrained(policy_path)
        curve = RewardCurve(eval_prompts[:curve_config.get("prompts", 16)], rewards[spec["online"]],
                            {"gold RM": gold_rm}, AutoModelForCausalLM.from_pretrained(policy_path), tokenizer,
                            every=curve_config.get("every", 10), max_new_tokens=curve_config.get("max_new_tokens", 32),
                            seed=seed, stop=config["samples"].get("stop", ["\n\nHuman:"]))
        model, log = train_online(policy_path, rewards[spec["online"]], train_prompts, trainer=trainer,
                                  settings={"seed": seed, **online}, output_dir=arm_dir / "trainer", callbacks=[curve])
        curve.table().to_csv(arm_dir / "curve.csv", index=False)
        write_jsonl(arm_dir / "curve_samples.jsonl", curve.samples)
    else:
        model, log = train_dpo(policy_path, dpo_targets[spec["dpo"]], soft=spec["dpo"] == "ai_soft",
                               settings={"seed": seed, **config["dpo"]}, output_dir=arm_dir / "trainer")
    shutil.rmtree(arm_dir / "trainer", ignore_errors=True)  # no checkpoints are saved; only TRL's empty folders
    log.to_csv(arm_dir / "log.csv", index=False)
    return model


def judge(config: dict, results: Path, eval_prompts: list[str], samples: dict[str, list[str]], gold_rm,
          references: list[str]) -> dict:
    """Win rates against SFT by the gold RM and the gold labeler, and the share judged harmless:
    the gold labeler's 1-10 score of the answer is at least its score of the people-preferred
    answer to the same prompt (``references``), a bar that needs no threshold on its scale."""
    gold = config["gold"]
    rows = []
    gold_rewards = {policy: np.asarray(gold_rm(eval_prompts, texts)) for policy, texts in samples.items()}
    arms = [policy for policy in samples if policy != SFT]
    for arm in arms:
        same = np.array([a == b for a, b in zip(samples[arm], samples[SFT])])
        mine, base = gold_rewards[arm], gold_rewards[SFT]
        rows.append({"policy": arm, "judge": "gold RM",
                     **metrics.win_rate(int(((mine > base) & ~same).sum()), int(((mine < base) & ~same).sum()),
                                        int((same | (mine == base)).sum()))})
    labeler = gold.get("labeler")
    harmless = pd.DataFrame()
    if labeler:
        backend = rlaif.CachedBackend(rlaif.TransformersBackend.from_pretrained(labeler["model"]),
                                      results / "gold_labeler_cache.sqlite")
        template = rlaif.PromptTemplate(labeler["task"], labeler.get("preamble", "base"))
        chat = labeler.get("chat_template", True)
        comparisons = [PreferencePair(f"{arm}|{i}", prompt, samples[arm][i], samples[SFT][i])
                       for arm in arms for i, prompt in enumerate(eval_prompts) if samples[arm][i] != samples[SFT][i]]
        judged = rlaif.label_pairs(comparisons, backend, template, chat_template=chat) if comparisons else pd.DataFrame(
            {"id": [], "p": []})
        judged["arm"] = judged["id"].str.rsplit("|", n=1).str[0]
        for arm in arms:
            p = judged.loc[judged["arm"] == arm, "p"].astype(float)
            rows.append({"policy": arm, "judge": f"gold labeler ({labeler['model']})",
                         **metrics.win_rate(int((p > 0.5).sum()), int((p < 0.5).sum()), len(eval_prompts) - int(
                             (p > 0.5).sum()) - int((p < 0.5).sum()))})
        scorer = rlaif.DirectScorer(backend, rlaif.PromptTemplate(labeler["task"], labeler.get("preamble", "base")),
                                    chat_template=chat)
        bar = scorer.score(eval_prompts, references)["score"]
        harmless_rows = [{"policy": "people-preferred HH answer", "mean_score": float(np.nanmean(bar))}]
        for policy, texts in samples.items():
            score = scorer.score(eval_prompts, texts)["score"]
            share = metrics.win_rate(int((score >= bar).sum()), int((score < bar).sum()))
            harmless_rows.append({"policy": policy, "mean_score": float(np.nanmean(score)), "judged_harmless":
                                  share["win_rate"], "ci_low": share["ci_low"], "ci_high": share["ci_high"],
                                  "n": len(texts)})
        harmless = pd.DataFrame(harmless_rows)
    return {"win_rates": pd.DataFrame(rows), "harmless": harmless,
            "gold_rewards": pd.DataFrame({policy: values for policy, values in gold_rewards.items()})}


def plot_curves(results: Path, curves: dict[str, pd.DataFrame]) -> None:
    """Gold and proxy reward gains against KL (Gao et al. 2022), and length over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return
    figure, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False)
    for axis, (arm, curve) in zip(axes[0], curves.items()):
        for column, style in (("proxy", "o-"), ("gold/gold RM", "s--")):
            gain = curve[column] - curve[column].iloc[0]
            axis.plot(curve["kl"], gain, style, label=column.removeprefix("gold/"))  # joined in step order
            for kl, value, step in zip(curve["kl"], gain, curve["step"]):
                axis.annotate(str(step), (kl, value), fontsize=7, textcoords="offset points", xytext=(3, 3))
        axis.set(title=arm, xlabel="KL(policy || start), nats", ylabel="reward gain over step 0")
        axis.axhline(0, color="grey", lw=0.5)
        axis.legend()
    figure.tight_layout()
    figure.savefig(results / "curves.png", dpi=120)
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for arm, curve in curves.items():
        axis.plot(curve["step"], curve["length_tokens"], "o-", label=arm)
    axis.set(xlabel="step", ylabel="mean sample length, tokens", title="length over training")
    axis.legend()
    figure.tight_layout()
    figure.savefig(results / "lengths.png", dpi=120)
    plt.close("all")


def main(argv=None) -> dict:
    config = load_config(argv)
    results = Path(config["results"])
    (results / "arms").mkdir(parents=True, exist_ok=True)
    (results / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    seed, data = config.get("seed", 0), config["data"]
    eval_pairs = load_part(data, data["eval"])
    train_prompts, eval_prompts = unique_prompts(load_part(data, data["train"])), unique_prompts(eval_pairs)
    preferred = {}  # the people-preferred answer to each held-out prompt: the bar for "judged harmless"
    for pair in eval_pairs:
        if pair.human_choice in (1, 2):
            preferred.setdefault(pair.context, pair.response_1 if pair.human_choice == 1 else pair.response_2)
    if set(train_prompts) & set(eval_prompts):
        raise SystemExit("data: the train and eval prompts overlap; move data.eval past data.train")

    dpo_pairs, ai_labels, rm_heldout = preference_data(Path(config["preference_data"]))
    taken = {pair.id for pair in dpo_pairs} | {pair.id for pair in rm_heldout}
    gold_rm = gold_reward_model(config, results, taken, rm_heldout)
    dpo_pairs = dpo_pairs[:config.get("dpo_pairs") or len(dpo_pairs)]  # the same pairs for the three DPO arms
    ai_labels = ai_labels[ai_labels["id"].isin({pair.id for pair in dpo_pairs})]
    dpo_targets = {"human": human_targets(dpo_pairs), "ai_hard": targets_from_labels(ai_labels, dpo_pairs, "ai_hard"),
                   "ai_soft": targets_from_labels(ai_labels, dpo_pairs, "ai_soft")}
    policy_path = hf_model_path(config["policy"]["model"])[0]  # TRL reloads the reference model by path
    backends: dict = {}
    needed = {spec["online"] for spec in config["arms"].values() if "online" in spec}
    rewards = {name: reward_from_spec(name, config["rewards"][name], backends) for name in sorted(needed)}

    samples, arm_rows = {}, []
    sampling_key = [config["policy"], data["eval"], config["samples"], seed]
    sft_dir = results / "arms" / slug(SFT)
    if not finished(sft_dir, settings_key(sampling_key)):
        sft_dir.mkdir(exist_ok=True)
        texts = sample_policy(rlaif.TransformersBackend.from_pretrained(policy_path),
                              eval_prompts, config["samples"], seed)
        write_jsonl(sft_dir / "samples.jsonl", [{"prompt": p, "completion": t} for p, t in zip(eval_prompts, texts)])
        (sft_dir / "arm.json").write_text(json.dumps({"arm": SFT, "key": settings_key(sampling_key)}) + "\n")
    samples[SFT] = [record["completion"] for record in read_jsonl(sft_dir / "samples.jsonl")]
    for name, spec in config["arms"].items():
        arm_dir = results / "arms" / slug(name)
        method = ([config["online"], config["rewards"][spec["online"]], config.get("curve", {}),
                   config["gold"]["reward_model"]] if "online" in spec else [config["dpo"], config.get("dpo_pairs")])
        key = settings_key(sampling_key, spec, method, data["train"], config["preference_data"])
        if not finished(arm_dir, key):
            shutil.rmtree(arm_dir, ignore_errors=True)
            arm_dir.mkdir(parents=True)
            print(f"arm {name}: training", flush=True)
            started = time.time()
            model = train_arm(name, spec, config, policy_path=policy_path, rewards=rewards, gold_rm=gold_rm,
                              train_prompts=train_prompts, eval_prompts=eval_prompts, dpo_targets=dpo_targets,
                              arm_dir=arm_dir)
            trained = time.time() - started
            from transformers import AutoTokenizer

            backend = rlaif.TransformersBackend(model, AutoTokenizer.from_pretrained(policy_path), name=name)
            texts = sample_policy(backend, eval_prompts, config["samples"], seed)
            write_jsonl(arm_dir / "samples.jsonl",
                        [{"prompt": p, "completion": t} for p, t in zip(eval_prompts, texts)])
            (arm_dir / "arm.json").write_text(json.dumps({
                "arm": name, "method": config["online"].get("trainer", "grpo") if "online" in spec else "dpo",
                "signal": spec.get("online", spec.get("dpo")), "train_seconds": round(trained, 1),
                "seconds": round(time.time() - started, 1), "key": key}) + "\n")
            del model, backend
        samples[name] = [record["completion"] for record in read_jsonl(arm_dir / "samples.jsonl")]
        arm_rows.append({k: v for k, v in json.loads((arm_dir / "arm.json").read_text()).items() if k != "key"})
    del rewards, backends

    judged = judge(config, results, eval_prompts, samples, gold_rm, [preferred.get(p, "") for p in eval_prompts])
    write_table(judged["win_rates"], results / "win_rates")
    if len(judged["harmless"]):
        write_table(judged["harmless"], results / "harmless")
    judged["gold_rewards"].to_csv(results / "gold_rewards.csv", index=False)
    frame = pd.DataFrame([{"policy": policy, "prompt": prompt, "completion": text}
                          for policy, texts in samples.items() for prompt, text in zip(eval_prompts, texts)])
    signatures = signature_shares(frame, baseline=SFT)
    write_table(signatures, results / "signatures")
    during = []  # the same shares on the monitor's samples, step by step: when did an attack appear?
    for name, spec in config["arms"].items():
        if "online" in spec:
            steps = pd.DataFrame(read_jsonl(results / "arms" / slug(name) / "curve_samples.jsonl"))
            steps["policy"] = "step " + steps["step"].astype(str)
            during.append(signature_shares(steps, baseline="step 0").rename(columns={"policy": "step"})
                          .assign(arm=name))
    if during:
        during = pd.concat(during, ignore_index=True)
        write_table(during[["arm", *[c for c in during.columns if c != "arm"]]], results / "signatures_during_training")
    write_table(pd.DataFrame(arm_rows), results / "arms")
    curves = {name: pd.read_csv(results / "arms" / slug(name) / "curve.csv")
              for name, spec in config["arms"].items() if "online" in spec}
    plot_curves(results, curves)
    print(judged["win_rates"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if len(judged["harmless"]):
        print(judged["harmless"].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return {**judged, "signatures": signatures, "arms": pd.DataFrame(arm_rows), "curves": curves}


if __name__ == "__main__":
    main()
