"""Reward models distilled from preference labels: a transformer with a scalar head scoring (context, response).

The same code trains on AI soft labels ("distilled RLAIF", Lee et al. 2023, 2.2.1)
and on human hard labels ("RLHF"), so the two can be compared with everything else
equal. The loss is the cross-entropy between the target preference [p, 1 - p] and
softmax([r1, r2]); for p in {0, 1} it is the Bradley-Terry loss -log sigmoid(r_w - r_l).

The model is transformers' sequence-classification model with one output (the head
TRL's RewardTrainer uses), so ``save_pretrained`` / ``from_pretrained`` round-trip
and any causal backbone works. ``trainable="head"`` freezes the backbone: each text's
final hidden state is computed once and only the head is trained, which is what
fits a small CPU; ``"all"`` fine-tunes everything, the GPU setting.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rlaif.backends.cpu_precision import default_dtype
from rlaif.direct_scores import as_text
from rlaif.labels_table import pointwise_row, settings_hash
from rlaif.pairs import PreferencePair
from rlaif.training.preference_targets import PreferenceTarget, data_hash, ranking_targets, targets_from_labels

INFO_FILE = "rlaif_reward_model.json"
__all__ = ["INFO_FILE", "PreferenceTarget", "RewardModel", "RewardTrainingConfig", "data_hash", "load_reward_models",
           "preference_loss", "ranking_targets", "reward_model_labels", "reward_text", "targets_from_labels",
           "train_reward_model"]


# ---------------------------------------------------------------- loss

def preference_loss(r1: torch.Tensor, r2: torch.Tensor, p: torch.Tensor, *, margin: float = 0.0,
                    center_weight: float = 0.0) -> torch.Tensor:
    """Mean over pairs of  -(p log sigmoid(r1 - r2 - m) + (1 - p) log sigmoid(r2 - r1 - m))
    + center_weight * (r1 + r2)^2.

    p = P(response 1 preferred): AI soft labels, or 1/0 for hard labels (then this is
    Bradley-Terry). The margin m asks the preferred reward to win by at least m (Llama 2's
    margin loss; 0 = plain cross-entropy). The centering term keeps rewards near zero
    (Eisenstein et al. 2023), since the loss sees only differences.
    """
    difference = r1 - r2
    loss = -(p * F.logsigmoid(difference - margin) + (1 - p) * F.logsigmoid(-difference - margin))
    if center_weight:
        loss = loss + center_weight * (r1 + r2) ** 2
    return loss.mean()


def reward_text(context: str, response: str) -> str:
    """What the reward model reads: the conversation with the response as the last turn."""
    if context.rstrip().endswith(":"):  # "...\n\nAssistant:" + " response"
        return context + (response if response.startswith((" ", "\n")) else " " + response)
    return f"{context}\n\n{response}" if context else response


# ---------------------------------------------------------------- model

@dataclass
class RewardTrainingConfig:
    """How a reward model is trained; saved beside it."""

    trainable: str = "head"       # "head" (frozen backbone, features cached) or "all"
    epochs: int = 20
    batch_size: int = 16          # pairs per optimizer step, before accumulation
    grad_accum: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    margin: float = 0.0
    center_weight: float = 0.0
    max_length: int = 512         # tokens per (context, response); contexts are cut from the left
    seed: int = 0


class RewardModel:
    """A scalar reward for (context, response); callable as a TRL reward function, like DirectScorer."""

    def __init__(self, model, tokenizer, *, name: str, info: dict[str, Any] | None = None, batch_size: int = 16,
                 feature_precision: str = "float32"):
        if feature_precision not in ("float32", "mixed"):
            raise ValueError(f"feature_precision must be 'float32' or 'mixed', got {feature_precision!r}")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        #: "mixed": ``features`` runs the backbone's matrix products in bf16 (CPU autocast) and the
        #: residual stream and final norm in fp32; training always runs the weights as they are.
        self.feature_precision = feature_precision
        self.info, self.batch_size = info or {}, batch_size
        self.tokenizer.truncation_side = "left"  # keep the response and the most recent context
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = int(self.info.get("config", {}).get("max_length", 512))
        #: {text: backbone feature}, valid while the backbone is frozen: shared by head-only RMs on one backbone.
        self.feature_cache: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_backbone(cls, backbone: str, *, dtype: str = "float32", device: str = "cpu", seed: int = 0,
                      feature_precision: str | None = None) -> "RewardModel":
        """A new reward model: ``backbone`` (catalogue name, folder, hub name) with a fresh scalar head.

        ``feature_precision`` (see ``features``) defaults to "mixed" for an fp32 model on a CPU with bf16
        matrix units (``rlaif.backends.cpu_precision``), else "float32".
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlaif.backends.models import hf_model_path

        path, source, _ = hf_model_path(backbone)
        torch.manual_seed(seed)  # the new head's initialization
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=getattr(torch, dtype))
        if feature_precision is None:
            feature_precision = default_dtype(device) if dtype == "float32" else "float32"
        return cls(model.to(device), AutoTokenizer.from_pretrained(path), name=backbone,
                   info={"backbone": backbone, "backbone_source": source}, feature_precision=feature_precision)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> "RewardModel":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        info_file = path / INFO_FILE
        if not info_file.is_file():
            raise FileNotFoundError(f"{path}: no {INFO_FILE}; not a reward model saved by rlaif")
        info = json.loads(info_file.read_text())
        model = AutoModelForSequenceClassification.from_pretrained(path).to(device)
        # the head reads features as they were computed in training (older saves: fp32)
        return cls(model, AutoTokenizer.from_pretrained(path), name=info.get("name", path.name), info=info,
                   feature_precision=info.get("feature_precision", "float32"))

    def save(self, path: str | Path) -> Path:
        """``save_pretrained`` (model and tokenizer) plus INFO_FILE: how it was trained, on what."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        info = {**self.info, "name": self.name, "feature_precision": self.feature_precision}
        (path / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        return path

    @property
    def head(self) -> torch.nn.Linear:
        head = getattr(self.model, "score", None)
        if not isinstance(head, torch.nn.Linear):
            raise TypeError(f"{type(self.model).__name__} has no linear 'score' head")
        return head

    def _encode(self, texts: Sequence[str]):
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {key: value.to(self.model.device) for key, value in batch.items()}

    def _last_positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask.sum(dim=1) - 1  # right padding: the last real token

    def features(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """The backbone's final hidden state at each text's last token (what the head reads), [n, hidden].

        With ``feature_precision="mixed"`` the linear layers and attention run in bf16 under autocast,
        while the residual stream, the norms and so the feature itself stay fp32.
        """
        self.tokenizer.padding_side = "right"
        chunks = []
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        mixed = torch.autocast(self.model.device.type, dtype=torch.bfloat16,
                               enabled=self.feature_precision == "mixed")
        with torch.inference_mode(), mixed:
            for start in tqdm(range(0, len(texts), self.batch_size), desc="reward-model features",
                              disable=not progress):
                rows = order[start:start + self.batch_size]
                batch = self._encode([texts[i] for i in rows])
                hidden = self.model.base_model(**batch).last_hidden_state
                last = self._last_positions(batch["attention_mask"])
                chunks.append(hidden[torch.arange(len(rows)), last].float().cpu())
        result = torch.empty((len(texts), self.model.config.hidden_size))
        if chunks:
            result[torch.tensor(order)] = torch.cat(chunks)
        return result

    def rewards(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """r(context, response) for each pair of the two sequences."""
        texts = [reward_text(c, r) for c, r in zip(contexts, responses)]
        if self.feature_cache is None:
            features = self.features(texts)
        else:
            todo = [t for t in dict.fromkeys(texts) if t not in self.feature_cache]
            self.feature_cache.update(zip(todo, self.features(todo)))
            features = torch.stack([self.feature_cache[t] for t in texts]) if texts else torch.empty(0)
        with torch.inference_mode():
            return self.head(features.to(self.head.weight)).squeeze(-1).double().cpu().numpy()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        """TRL's reward-function convention (strings or chat messages), as DirectScorer."""
        return [float(r) for r in self.rewards([as_text(p) for p in prompts], [as_text(c) for c in completions])]

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "reward_model", "model": self.name, "data_hash": self.info.get("data_hash"),
                "labels_source": self.info.get("labels_source")}


def load_reward_models(paths: dict[str, str | Path]) -> dict[str, RewardModel]:
    """Saved reward models by name, each checked before any is loaded (a typo fails fast)."""
    for name, path in paths.items():
        if not (Path(path) / INFO_FILE).is_file():
            raise FileNotFoundError(f"reward model {name}: {path} holds no reward model saved by rlaif; train one "
                                    "with experiments/rlaif_vs_rlhf_rm.py (save_models: true) or RewardModel.save")
    models = {name: RewardModel.load(path) for name, path in paths.items()}
    # Head-only RMs on one backbone read the same features: compute each text's once for all of them.
    shared: dict[tuple, dict[str, torch.Tensor]] = {}
    for rm in models.values():
        if rm.info.get("config", {}).get("trainable") == "head" and rm.info.get("backbone"):
            key = (rm.info["backbone"], rm.feature_precision, rm.max_length)
            rm.feature_cache = shared.setdefault(key, {})
    return models


# ---------------------------------------------------------------- training

def _batches(targets: Sequence[PreferenceTarget], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of whole groups (all pairs of one prompt together), about ``batch_size`` pairs each."""
    groups: dict[str, list[int]] = {}
    for i, target in enumerate(targets):
        groups.setdefault(target.group, []).append(i)
    keys = list(groups)
    rng.shuffle(keys)
    batches, current = [], []
    for key in keys:
        current += groups[key]
        if len(current) >= batch_size:
            batches.append(current)
            current = []
    return batches + ([current] if current else [])


def _pair_texts(targets: Sequence[PreferenceTarget]) -> tuple[list[str], list[str]]:
    return ([reward_text(t.context, t.response_1) for t in targets],
            [reward_text(t.context, t.response_2) for t in targets])


def train_reward_model(rm: RewardModel, train: Sequence[PreferenceTarget], *, config: RewardTrainingConfig,
                       labels_source: str, evaluate: Sequence[PreferenceTarget] = (), progress: bool = True,
                       features: dict[str, torch.Tensor] | None = None) -> list[dict[str, float]]:
    """Train ``rm`` in place; returns the history: one dict per epoch (train loss, eval loss and
    accuracy), after an epoch-0 evaluation of the untrained model when ``evaluate`` is given.

    Seeded (``config.seed``): same data and config give the same model. ``features``: a cache
    {text: backbone feature} shared between models on the same backbone (``trainable="head"``).
    """
    if not train:
        raise ValueError("no training pairs (all filtered out?)")
    if config.trainable not in ("head", "all"):
        raise ValueError(f"trainable must be 'head' or 'all', got {config.trainable!r}")
    rm.max_length = config.max_length
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    head_only = config.trainable == "head"
    if not head_only:  # a tuned backbone trains, and is then read, in its weights' own precision
        rm.feature_precision = "float32"
    for parameter in rm.model.parameters():
        parameter.requires_grad_(not head_only)
    rm.head.weight.requires_grad_(True)
    if rm.head.bias is not None:
        rm.head.bias.requires_grad_(True)
    trainable = [p for p in rm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)

    def featurize(targets: Sequence[PreferenceTarget]) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = _pair_texts(targets)
        cache = features if features is not None else {}
        todo = [t for t in dict.fromkeys(first + second) if t not in cache]
        if todo:
            cache.update(zip(todo, rm.features(todo, progress=progress)))
        return torch.stack([cache[t] for t in first]), torch.stack([cache[t] for t in second])

    def score_pairs(targets: Sequence[PreferenceTarget], cached=None) -> tuple[torch.Tensor, torch.Tensor]:
        if cached is not None:
            f1, f2 = cached
            return rm.head(f1.to(rm.head.weight)).squeeze(-1), rm.head(f2.to(rm.head.weight)).squeeze(-1)
        rm.tokenizer.padding_side = "right"
        first, second = _pair_texts(targets)
        batch = rm._encode(first + second)
        out = rm.model.base_model(**batch).last_hidden_state
        last = rm._last_positions(batch["attention_mask"])
        rewards = rm.head(out[torch.arange(len(last)), last]).squeeze(-1)
        return rewards[:len(targets)], rewards[len(targets):]

    train_features = featurize(train) if head_only else None
    eval_features = featurize(evaluate) if head_only and evaluate else None
    p_train = torch.tensor([t.p for t in train], dtype=torch.float32)
    history = []
    if evaluate:  # before training: the baseline each epoch is compared with
        history.append({"epoch": 0, **_evaluate_targets(rm, evaluate, score_pairs, eval_features, config)})
    for epoch in tqdm(range(config.epochs), desc="reward model epochs", disable=not progress):
        rm.model.train(not head_only)
        losses = []
        batches = _batches(train, config.batch_size, rng)
        for step, rows in enumerate(batches):
            index = torch.tensor(rows)
            cached = (train_features[0][index], train_features[1][index]) if head_only else None
            r1, r2 = score_pairs([train[i] for i in rows], cached)
            loss = preference_loss(r1, r2, p_train[index].to(r1), margin=config.margin,
                                   center_weight=config.center_weight)
            (loss / config.grad_accum).backward()
            losses.append(float(loss.detach()))
            if (step + 1) % config.grad_accum == 0 or step == len(batches) - 1:
                optimizer.step()
                optimizer.zero_grad()
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if evaluate:
            record.update(_evaluate_targets(rm, evaluate, score_pairs, eval_features, config))
        history.append(record)
    rm.model.eval()
    for parameter in rm.model.parameters():
        parameter.requires_grad_(False)
    rm.feature_cache = features if head_only and features is not None else None  # a tuned backbone voids it
    rm.info.update(labels_source=labels_source, data_hash=data_hash(train), train_pairs=len(train),
                   config=asdict(config), history=history)
    return history


def _evaluate_targets(rm, targets, score_pairs, cached, config) -> dict[str, float]:
    rm.model.eval()
    with torch.no_grad():
        r1, r2 = (score_pairs(targets, cached) if cached is not None
                  else _scored_in_batches(targets, score_pairs, config))
        p = torch.tensor([t.p for t in targets], dtype=torch.float32).to(r1)
        loss = preference_loss(r1, r2, p, margin=config.margin, center_weight=config.center_weight)
        decided = p != 0.5
        accuracy = ((r1 > r2) == (p > 0.5))[decided].float().mean()
    return {"eval_loss": float(loss), "eval_accuracy": float(accuracy)}


def _scored_in_batches(targets, score_pairs, config):
    parts = [score_pairs(targets[i:i + config.batch_size]) for i in range(0, len(targets), config.batch_size)]
    return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])


# ---------------------------------------------------------------- as a labeler

def reward_model_labels(pairs: Sequence[PreferencePair], rm: RewardModel) -> pd.DataFrame:
    """The reward model as a pairwise labeler: P(1 preferred) = sigmoid(r1 - r2), in rows the
    report reads like ``label_pairs``'s (a pointwise score has no position bias: both orders equal)."""
    r1 = rm.rewards([p.context for p in pairs], [p.response_1 for p in pairs])
    r2 = rm.rewards([p.context for p in pairs], [p.response_2 for p in pairs])
    fingerprint = rm.fingerprint()
    run_info = {"model": fingerprint["model"], "template": f"reward-model/{fingerprint['labels_source']}",
                "labels": ["1", "2"], "chat_template": False, "run_id": settings_hash(fingerprint)}
    return pd.DataFrame([pointwise_row(pair, run_info, r1[i], r2[i], names=("reward_1", "reward_2"))
                         for i, pair in enumerate(pairs)])
