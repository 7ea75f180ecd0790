"""Do rlaif's GPU code paths work on CUDA, and agree with the CPU? Numbers for each path.

Every check loads a tiny random ``LlamaForCausalLM`` (hidden 64, 2 layers, SmolLM2's tokenizer,
seed 0) on the device under test and on the CPU. Each check, and why it exists:

  a. ``TransformersBackend.label_logprobs``: the shared-prefix KV caches, the remembered prefix
     caches and the multi-token "chains" path build tensors by hand, so device placement and
     numerics can break there alone (against ``share_prefixes=False`` and the CPU); bf16 and
     ``generate`` (the CoT path; seeded sampling must not move the caller's generators) ride along.
  b. ``label_pairs`` end to end on real HH-RLHF pairs (chat template): the labels the
     experiments use must not depend on the device.
  c. ``DirectScorer``: 1-10 scores as rewards, the reward GRPO trains against in e.
  d. ``RewardModel``: rewards, ``train_reward_model`` (head and full) and save/load on a device.
  e. TRL through ``rlaif.training.policy_training`` (if trl imports): GRPO and soft/hard DPO with
     ``RewardCurve`` exactly as shipped, which once failed on the GPU (encodings left on the CPU)
     and once changed the run it watched (it reseeded the CUDA generator). Asserts a step-0 KL of
     0 and, for GRPO, the same reward per step with and without the monitor (both seeded alike);
     gives steps/s.

    python benchmarks/gpu_paths.py --tokenizer DIR --data dev.jsonl.gz --json out.json
    python benchmarks/gpu_paths.py ... --device cpu --repeats 1 --steps 2   # dry run: the CPU against itself

The tokenizer folder: ``load_tokenizer('smollm2-135m').save_pretrained(DIR)``. The JSON holds each
check's numbers, ``pass`` and error, and is rewritten after every check (a run cut short keeps them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback

import rlaif
from rlaif.training.reward_model import RewardModel, RewardTrainingConfig, targets_from_labels, train_reward_model
from rlaif.training.rl_monitor import RewardCurve

TOL = 1e-3


def versions() -> dict:
    names = "torch transformers tokenizers huggingface_hub accelerate trl datasets numpy pandas rlaif".split()
    return {"python": platform.python_version(),
            **{name: next((d.version for d in metadata.distributions(name=name)), None) for name in names}}


def max_abs(a, b) -> float:
    """Largest absolute difference; NaNs in the same places count as equal, any other non-finite as inf."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return float(np.nan_to_num(diff, nan=np.inf).max()) if a.size else 0.0


def rng_states(device: str) -> list[torch.Tensor]:
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if device.startswith("cuda") else [])


def timed(device: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and the seconds it took, the device synchronized before and after."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    sync()
    return result, round(time.perf_counter() - start, 3)


class Report:
    def __init__(self, path: Path, header: dict):
        self.path, self.data = path, {**header, "checks": []}
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")

    def run(self, name: str, fn, *args) -> None:
        """Run one check: fn(numbers, *args) -> pass; the numbers it filled are kept even when it raises."""
        entry = {"name": name, "pass": False, "numbers": {}}
        start = time.perf_counter()
        print(f"--- {name}", flush=True)
        try:
            entry["pass"] = bool(fn(entry["numbers"], *args))
        except Exception as error:  # a check that raises fails; the others still run
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            print(entry["traceback"], flush=True)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps({k: v for k, v in entry.items() if k != "traceback"}, default=str)[:3000], flush=True)
        self.data["checks"].append(entry)
        self.write()


def build_tiny_model(tokenizer_dir: str, folder: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         initializer_range=0.1, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"vocab": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
            "hidden": 64, "layers": 2, "seed": 0}


# ---------------------------------------------------------------- a. backend
PREAMBLE = ("A good response is helpful, honest and harmless. You are an expert rater of conversations between a "
            "person and an AI assistant. Read the conversation, then both responses, and decide which response is "
            "better. Consider accuracy, relevance, tone, safety and whether the response answers what was asked. ")


def shared_prompts(n_contexts: int = 10) -> list[str]:
    """Two orders of each context: all share a long preamble, each pair shares its context."""
    context = ("Conversation {i}: Human: how would I go about task number {i} in a safe way? "
               "Please explain in detail, step {i} first. ") * 3
    return [f"{PREAMBLE * 4}\n\n{context.format(i=i)}\nResponse 1: the {order} answer to {i}."
            f"\nResponse 2: the other answer, {order}.\nPreferred Response="
            for i in range(n_contexts) for order in ("first", "second")]


def check_backend(numbers: dict, folder: str, device: str) -> bool:
    prompts = shared_prompts()
    labels = ["1", "2"]
    gpu = rlaif.TransformersBackend.from_pretrained(folder, device=device)
    cpu = rlaif.TransformersBackend.from_pretrained(folder, device="cpu")
    plain = rlaif.TransformersBackend.from_pretrained(folder, device=device, share_prefixes=False)
    numbers.update(prompts=len(prompts), prompt_tokens=gpu.count_tokens(prompts)[:2],
                   model_device=str(gpu.model.device), fingerprint=gpu.fingerprint())

    lp_gpu = gpu.label_logprobs(prompts, labels)
    numbers["stats_gpu_shared"] = dict(gpu.stats)
    lp_cpu = cpu.label_logprobs(prompts, labels)
    lp_plain = plain.label_logprobs(prompts, labels)
    numbers["stats_gpu_unshared"] = dict(plain.stats)
    lp_again = gpu.label_logprobs(prompts, labels)  # the remembered prefix caches are used now
    remembered = [kv for kv in gpu._remembered.values() if kv]
    numbers.update(remembered_prefixes=len(gpu._remembered),
                   remembered_cache_devices=sorted({str(k.device) for kv in remembered for k, _ in kv}),
                   remembered_cache_dtypes=sorted({str(k.dtype) for kv in remembered for k, _ in kv}))
    numbers["label_margin_std"] = float(np.std(lp_gpu[:, 0] - lp_gpu[:, 1]))  # the comparison is not vacuous
    numbers["max_abs_gpu_vs_cpu"] = max_abs(lp_gpu, lp_cpu)
    numbers["max_abs_gpu_shared_vs_unshared"] = max_abs(lp_gpu, lp_plain)
    numbers["max_abs_gpu_first_vs_remembered"] = max_abs(lp_gpu, lp_again)

    multi = ["Response 1", "Response 2"]  # several tokens each: the chains path
    numbers["max_abs_chains_gpu_vs_cpu"] = max_abs(gpu.label_logprobs(prompts, multi),
                                                   cpu.label_logprobs(prompts, multi))
    numbers["max_abs_chains_gpu_shared_vs_unshared"] = max_abs(gpu.label_logprobs(prompts, multi),
                                                               plain.label_logprobs(prompts, multi))

    def cold(backend):  # a call that remembers no prefix from the last one
        backend._remembered.clear()
        return backend.label_logprobs(prompts, labels)

    for name, backend in (("gpu", gpu), ("cpu", cpu), ("gpu_unshared", plain)):  # speed, after a warm-up call
        cold(backend)
        _, seconds = timed(device, lambda: [cold(backend) for _ in range(3)])
        numbers[f"prompts_per_s_{name}"] = round(3 * len(prompts) / seconds, 1)

    # bf16 on the GPU against fp32 on the CPU: informational (bf16 has ~3 significant digits)
    half = rlaif.TransformersBackend.from_pretrained(folder, device=device, dtype="bfloat16")
    lp_half = half.label_logprobs(prompts, labels)
    numbers["bf16_fingerprint_dtype"] = half.fingerprint()["dtype"]
    numbers["bf16_finite"] = bool(np.isfinite(lp_half).all())
    numbers["bf16_max_abs_vs_cpu_fp32"] = max_abs(lp_half, lp_cpu)
    numbers["bf16_max_abs_p1_vs_cpu_fp32"] = max_abs(
        np.exp(lp_half[:, 0]) / np.exp(lp_half).sum(1), np.exp(lp_cpu[:, 0]) / np.exp(lp_cpu).sum(1))

    # generate (the CoT path): greedy continuations, GPU vs CPU
    gen_gpu = gpu.generate(prompts[:4], max_new_tokens=12)
    gen_cpu = cpu.generate(prompts[:4], max_new_tokens=12)
    numbers["generate_greedy_equal_gpu_cpu"] = gen_gpu == gen_cpu
    before = rng_states(device)  # seeded sampling must leave the caller's generators as they were
    sampled = gpu.generate(prompts[:2], max_new_tokens=8, temperature=0.7, n=3, stop=["\n"])
    numbers["generate_sampled_counts"] = [len(s) for s in sampled]
    numbers["generate_keeps_caller_rng"] = all(map(torch.equal, before, rng_states(device)))
    return (numbers["max_abs_gpu_vs_cpu"] < TOL and numbers["max_abs_gpu_shared_vs_unshared"] < TOL
            and numbers["max_abs_gpu_first_vs_remembered"] < TOL and numbers["max_abs_chains_gpu_vs_cpu"] < TOL
            and numbers["max_abs_chains_gpu_shared_vs_unshared"] < TOL and numbers["bf16_finite"]
            and numbers["generate_keeps_caller_rng"] and numbers["model_device"].startswith(device))


# ---------------------------------------------------------------- b. label_pairs
def check_label_pairs(numbers: dict, folder: str, data: str, device: str, state: dict) -> bool:
    state["pairs"] = pairs = rlaif.load_pairs(data, "hh-rlhf", limit=16)
    template = rlaif.PromptTemplate("harmless")
    numbers["pairs"] = len(pairs)
    runs = {}
    for name, dev in (("gpu", device), ("cpu", "cpu")):
        backend = rlaif.TransformersBackend.from_pretrained(folder, device=dev)
        runs[name], numbers[f"seconds_{name}"] = timed(dev, rlaif.label_pairs, pairs, backend, template,
                                                       chat_template=True, progress=False)
        numbers[f"stats_{name}"] = dict(backend.stats)
        state[f"backend_{name}"] = backend
    gpu, cpu = runs["gpu"], runs["cpu"]
    state["labels"] = gpu
    numbers["skipped"] = int(gpu["skipped_reason"].notna().sum()) if "skipped_reason" in gpu else None
    numbers["p_gpu"] = [round(float(v), 6) for v in gpu["p"]]
    for column in ("p", "p_first_order", "p_swapped_order", "candidate_mass"):
        numbers[f"max_abs_{column}"] = max_abs(gpu[column], cpu[column])
    numbers["ai_choice_equal"] = bool((gpu["ai_choice"].values == cpu["ai_choice"].values).all())
    numbers["run_id_equal"] = bool(gpu["run_id"].iloc[0] == cpu["run_id"].iloc[0]) if "run_id" in gpu else None
    numbers["summary_gpu"] = {k: v for k, v in rlaif.summarize(gpu).items() if isinstance(v, (int, float, str))}
    return (len(gpu) == len(pairs) and numbers["max_abs_p"] < TOL and numbers["max_abs_p_first_order"] < TOL
            and numbers["max_abs_p_swapped_order"] < TOL)


# ---------------------------------------------------------------- c. DirectScorer
def check_direct(numbers: dict, device: str, state: dict) -> bool:
    pairs = state["pairs"]
    template = rlaif.PromptTemplate("harmless")
    contexts = [p.context for p in pairs] * 2
    responses = [p.response_1 for p in pairs] + [p.response_2 for p in pairs]
    scored, scorer = {}, {}
    for name in ("gpu", "cpu"):
        scorer[name] = rlaif.DirectScorer(state[f"backend_{name}"], template, chat_template=True)
        scored[name], numbers[f"seconds_{name}"] = timed(device, scorer[name].score, contexts, responses)
    numbers["responses"] = len(responses)
    numbers["score_gpu_first5"] = [round(float(v), 5) for v in scored["gpu"]["score"][:5]]
    numbers["mass_gpu_mean"] = float(np.nanmean(scored["gpu"]["mass"]))
    numbers["max_abs_score"] = max_abs(scored["gpu"]["score"], scored["cpu"]["score"])
    numbers["max_abs_reward"] = max_abs(scored["gpu"]["reward"], scored["cpu"]["reward"])
    numbers["max_abs_distribution"] = max_abs(scored["gpu"]["distribution"], scored["cpu"]["distribution"])
    as_reward = scorer["gpu"](prompts=contexts[:4], completions=responses[:4])
    numbers["trl_call_max_abs_vs_score"] = max_abs(as_reward, scored["gpu"]["reward"][:4])
    numbers["score_pairs_rows"] = len(rlaif.score_pairs(pairs[:4], scorer["gpu"], progress=False))
    return (numbers["max_abs_score"] < TOL and numbers["max_abs_reward"] < TOL
            and numbers["trl_call_max_abs_vs_score"] < TOL and bool(np.isfinite(scored["gpu"]["score"]).all()))


# ---------------------------------------------------------------- d. RewardModel
def check_reward_model(numbers: dict, folder: str, device: str, state: dict) -> bool:
    pairs = state["pairs"]
    contexts = [p.context for p in pairs]
    responses = [p.response_1 for p in pairs]
    gpu = RewardModel.from_backbone(folder, device=device, seed=0)
    cpu = RewardModel.from_backbone(folder, device="cpu", seed=0)
    numbers["model_device"] = str(gpu.model.device)
    r_gpu, r_cpu = gpu.rewards(contexts, responses), cpu.rewards(contexts, responses)
    numbers["reward_std"] = float(np.std(r_gpu))
    numbers["max_abs_rewards_gpu_vs_cpu"] = max_abs(r_gpu, r_cpu)
    numbers["trl_call_max_abs"] = max_abs(gpu(contexts[:3], responses[:3]), r_gpu[:3])

    targets = targets_from_labels(state["labels"], pairs, "ai_soft")
    numbers["targets"] = len(targets)
    histories = {}
    for trainable in ("head", "all"):
        for name, dev in (("gpu", device), ("cpu", "cpu")):
            rm = RewardModel.from_backbone(folder, device=dev, seed=0)
            config = RewardTrainingConfig(trainable=trainable, epochs=2, batch_size=8, learning_rate=1e-3,
                                          max_length=256)
            histories[trainable, name], numbers[f"train_{trainable}_{name}_seconds"] = timed(
                dev, train_reward_model, rm, targets, config=config, labels_source="ai_soft", evaluate=targets[:8],
                progress=False)
            if name == "gpu":
                trained = rm  # the last one kept: trainable="all" on the device under test
        numbers[f"train_{trainable}_gpu_history"] = histories[trainable, "gpu"]
        numbers[f"train_{trainable}_max_abs_train_loss_gpu_vs_cpu"] = max_abs(
            [h.get("train_loss", 0.0) for h in histories[trainable, "gpu"]],
            [h.get("train_loss", 0.0) for h in histories[trainable, "cpu"]])
    numbers["trained_all_param_devices"] = sorted({str(p.device) for p in trained.model.parameters()})
    with tempfile.TemporaryDirectory() as tmp:
        trained.save(tmp)
        loaded = RewardModel.load(tmp, device=device)
        numbers["loaded_device"] = str(loaded.model.device)
        numbers["max_abs_loaded_vs_trained"] = max_abs(loaded.rewards(contexts, responses),
                                                       trained.rewards(contexts, responses))
    return (numbers["max_abs_rewards_gpu_vs_cpu"] < TOL and numbers["max_abs_loaded_vs_trained"] < TOL
            and numbers["model_device"].startswith(device) and numbers["loaded_device"].startswith(device)
            and all(math.isfinite(h.get("train_loss", 0.0)) for hist in histories.values() for h in hist))


# ---------------------------------------------------------------- e. TRL
class Timer(TrainerCallback):
    """Optimizer steps per second after the first step (warm-up, and the step-0 measurement)."""

    def __init__(self):
        self.steps: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter())

    def steps_per_s(self):
        return round((len(self.steps) - 1) / (self.steps[-1] - self.steps[0]), 3) if len(self.steps) > 1 else None


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) / 100 for c in completions]


def reward_curve(folder: str, prompts, proxy) -> RewardCurve:
    """RewardCurve exactly as a user builds it (reference loaded on the CPU); ``curve.seconds``: each
    measurement's cost."""
    curve = RewardCurve(prompts[:4], proxy, {"length": length_reward}, AutoModelForCausalLM.from_pretrained(folder),
                        AutoTokenizer.from_pretrained(folder), every=1, max_new_tokens=8, seed=0)
    curve.seconds, measure = [], curve.measure

    def measure_timed(model, *args, **kwargs):
        row, seconds = timed(str(model.device), measure, model, *args, **kwargs)
        curve.seconds.append(seconds)
        return row

    curve.measure = measure_timed
    return curve


def check_grpo(numbers: dict, folder: str, device: str, state: dict, tmp: Path, steps: int, repeats: int) -> bool:
    """GRPO against a DirectScorer, every run seeded alike: ``bare`` (no monitor) and ``monitored`` (its
    proxy a scorer of its own, so the two runs differ by the monitor alone) decide the check;
    ``shared_proxy`` (the training scorer is the proxy too, as in experiments/rlaif_vs_rlhf_policy.py:
    its remembered prefix caches may move rewards by rounding) and ``bare_again`` (is a run
    reproducible at all?) are informational."""
    from rlaif.training.policy_training import train_online

    prompts = [p.context[-400:] for p in state["pairs"][:8]]
    settings = {"num_generations": 4, "per_device_train_batch_size": 4, "max_completion_length": 16,
                "max_steps": steps, "beta": 0.05, "learning_rate": 1e-3, "seed": 0, "use_cpu": device == "cpu",
                "logging_steps": 1, "temperature": 0.9}
    def fresh_scorer():  # on a backend of its own: no prefix caches remembered from other calls
        backend = rlaif.TransformersBackend.from_pretrained(folder, device=device)
        return rlaif.DirectScorer(backend, rlaif.PromptTemplate("harmless"), chat_template=True)

    rewards = {}
    for name in ["bare", "monitored", "shared_proxy"] + ["bare_again"] * (repeats > 1):
        reward, timer = fresh_scorer(), Timer()
        curve = None if name.startswith("bare") else \
            reward_curve(folder, prompts, reward if name == "shared_proxy" else fresh_scorer())
        model, log = train_online(folder, reward, prompts, trainer="grpo", settings=settings,
                                  output_dir=tmp / f"grpo_{name}", callbacks=[timer] + [curve] * (curve is not None))
        rewards[name] = [float(v) for v in log["reward"]]
        run = numbers[name] = {"reward_per_step": rewards[name], "steps_per_s": timer.steps_per_s(),
                               "policy_device": str(model.device), "policy_dtype": str(model.dtype)}
        if curve is not None:
            run.update(kl=[float(v) for v in curve.table()["kl"]], monitor_seconds=curve.seconds,
                       curve=curve.table().to_dict(orient="records"))
        if name != "bare":
            run.update(same_run_as_bare=rewards[name] == rewards["bare"],
                       max_abs_reward_diff_vs_bare=max_abs(rewards[name], rewards["bare"]))
    numbers["kl_step0"] = numbers["monitored"]["kl"][0]
    numbers["monitor_changes_run"] = not numbers["monitored"]["same_run_as_bare"]
    return (numbers["kl_step0"] == 0.0 and not numbers["monitor_changes_run"] and len(rewards["bare"]) == steps
            and numbers["monitored"]["policy_device"].startswith(device))


def check_dpo(numbers: dict, folder: str, device: str, state: dict, tmp: Path, steps: int, repeats: int) -> bool:
    """Soft-label and hard DPO with RewardCurve as a callback; numbers from the last of ``repeats`` rounds (warm)."""
    from rlaif.training.policy_training import train_dpo

    targets = targets_from_labels(state["labels"], state["pairs"], "ai_soft")
    targets = [t.__class__(t.context[-400:], t.response_1[:300], t.response_2[:300], t.p, t.group) for t in targets]
    settings = {"max_steps": steps, "per_device_train_batch_size": 4, "max_length": 256, "beta": 0.1, "seed": 0,
                "learning_rate": 1e-3, "use_cpu": device == "cpu", "logging_steps": 1}
    for _ in range(repeats):
        for key in ("soft", "hard"):
            timer, curve = Timer(), reward_curve(folder, [t.context for t in targets], length_reward)
            model, log = train_dpo(folder, targets, soft=key == "soft", settings=settings,
                                   output_dir=tmp / f"dpo_{key}", callbacks=[timer, curve])
            numbers[key] = {"loss": [float(v) for v in log["loss"]], "kl": [float(v) for v in curve.table()["kl"]],
                            "steps_per_s": timer.steps_per_s(), "monitor_seconds": curve.seconds,
                            "policy_device": str(model.device)}
    return all(len(run["loss"]) == steps and run["kl"][0] == 0.0 and all(map(math.isfinite, run["loss"]))
               and run["policy_device"].startswith(device) for run in (numbers["soft"], numbers["hard"]))


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="folder with SmolLM2's tokenizer files")
    parser.add_argument("--data", default="../shared/data/hh-rlhf/harmless-base/dev.jsonl.gz", help="HH-RLHF jsonl")
    parser.add_argument("--json", required=True, help="where the results go")
    parser.add_argument("--device", default="cuda", help="device under test (cpu: a dry run against the CPU)")
    parser.add_argument("--skip-trl", action="store_true", help="leave out the TRL checks (e)")
    parser.add_argument("--skip-backend", action="store_true", help="leave out checks a and d (a quicker dry run)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps of each TRL run")
    parser.add_argument("--repeats", type=int, default=2, help="2: a second bare GRPO run and warm DPO timings")
    args = parser.parse_args(argv)

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_paths.py: CUDA is not available here; run it on a GPU machine, or pass --device cpu")
    if args.device == "cpu":
        torch.set_num_threads(1)  # a dry run shares its machine
    header = {"device_under_test": args.device, "reference_device": "cpu", "tolerance": TOL, "versions": versions(),
              "torch_cuda": torch.version.cuda, "rlaif_file": rlaif.__file__,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if torch.cuda.is_available():
        header.update(device_name=torch.cuda.get_device_name(0), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    report = Report(Path(args.json), header)
    state: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = str(tmp / "tiny-llama")
        report.data["model"] = build_tiny_model(args.tokenizer, Path(folder))
        if not args.skip_backend:
            report.run("a_backend_label_logprobs", check_backend, folder, args.device)
        report.run("b_label_pairs", check_label_pairs, folder, args.data, args.device, state)
        if "labels" in state:
            report.run("c_direct_scorer", check_direct, args.device, state)
            if not args.skip_backend:
                report.run("d_reward_model", check_reward_model, folder, args.device, state)
        skip = ("--skip-trl" if args.skip_trl else "check b labeled nothing" if "labels" not in state
                else "trl is not installed" if importlib.util.find_spec("trl") is None else None)
        if skip:
            report.data["trl"] = f"skipped: {skip}"
        else:
            report.run("e_grpo_reward_curve", check_grpo, folder, args.device, state, tmp, args.steps, args.repeats)
            report.run("e_dpo_soft_and_hard", check_dpo, folder, args.device, state, tmp, args.steps, args.repeats)
    verdict = {key: [c["name"] for c in report.data["checks"] if c["pass"] == (key == "passed")]
               for key in ("passed", "failed")}
    report.data.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), **verdict)
    report.write()
    print(json.dumps(verdict), flush=True)
    return 1 if verdict["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
