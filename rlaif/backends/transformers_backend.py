"""In-process labeling with a transformers causal LM (CPU or GPU).

Labels are scored as continuations of the prompt by the boundary rule in
``rlaif.backends.label_tokens``. When every label is one token after the prompt
(the usual "1"/"2"), one forward pass per prompt reads the next-token log-probs
(the fast path). Otherwise each label's log-likelihood is the sum over its tokens,
from one pass per "chain" (the prompt plus a shared label prefix), all batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlaif.backends.label_tokens import Continuation, continuation, plan
from rlaif.models import DEFAULT_MODEL, resolve_model

def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (generation may run a few tokens past it)."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersBackend:
    """Scores label tokens with one forward pass per prompt, batched with left padding."""

    def __init__(self, model, tokenizer, *, name: str, batch_size: int = 8, source: str = "",
                 revision: str | None = None, max_prompt_tokens: int | None = None, weights: str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.tokenizer, self.name, self.batch_size = model.eval(), tokenizer, name, batch_size
        self.source = source or getattr(model.config, "_name_or_path", "")
        self.revision = revision
        #: Identifies the weights in cache keys and run ids (see ResolvedModel.weights_id).
        self.weights = weights or getattr(model.config, "_commit_hash", None)
        #: Longest prompt the model takes (its position limit); the labeler fits prompts to it.
        self.max_prompt_tokens = max_prompt_tokens or getattr(model.config, "max_position_embeddings", None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError(f"{name}: the tokenizer has neither a pad nor an eos token to pad batches with")

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "cpu",
                        batch_size: int = 8, revision: str | None = None,
                        max_prompt_tokens: int | None = None) -> "TransformersBackend":
        """Load by catalogue name, local folder, local .gguf file or hub name (see ``resolve_model``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        resolved = resolve_model(name)
        kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        if resolved.gguf_file:
            kwargs["gguf_file"] = resolved.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=DTYPES[dtype], **kwargs).to(device)
        return cls(model, tokenizer, name=name, batch_size=batch_size, source=resolved.describe(),
                   revision=revision, max_prompt_tokens=max_prompt_tokens, weights=resolved.weights_id())

    # ---------------------------------------------------------------- tokens

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids; no second BOS when the text (a chat-formatted prompt) already starts with it."""
        bos = self.tokenizer.bos_token
        return [self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
                for text in texts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._encode(texts)]

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        return [continuation(lambda text: self._encode([text])[0], prompt, label) for label in labels]

    # ---------------------------------------------------------------- scoring

    @torch.inference_mode()
    def _logprobs_at_end(self, batch: list[list[int]], keep: int) -> torch.Tensor:
        """Log-softmax of the next-token logits at the last ``keep`` positions: [batch, keep, vocab].

        Sequences are left-padded; positions count real tokens only, so a padded
        sequence sees the same positions as alone.
        """
        input_ids, mask = self._left_pad(batch)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        device = self.model.device
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                         position_ids=position_ids.to(device), logits_to_keep=keep, use_cache=False)
        return torch.log_softmax(out.logits[:, -keep:, :].float(), dim=-1).cpu()

    def _left_pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) with every sequence right-aligned, so the last position is real."""
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        return input_ids, mask

    def _batches(self, sequences: list[list[int]]):
        """Index batches of similar length (less padding); callers put results back by index."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size]

    def _single_token(self, conts: list[list[Continuation]]) -> np.ndarray:
        """Fast path: every label is one token after an unchanged prompt; one pass per prompt."""
        prompts = [list(row[0].prompt_ids) for row in conts]
        result = np.empty((len(conts), len(conts[0])), dtype=np.float64)
        for rows in self._batches(prompts):
            logprobs = self._logprobs_at_end([prompts[i] for i in rows], keep=1)[:, -1, :]
            index = torch.tensor([[c.label_ids[0] for c in conts[i]] for i in rows])
            result[rows] = torch.gather(logprobs, 1, index).double().numpy()
        return result

    def _chains(self, conts: list[list[Continuation]]) -> np.ndarray:
        """Any labels: sum of token log-probs, from one pass per chain (see label_tokens.plan)."""
        sequences, keeps, where = [], [], []
        for row in conts:
            chains, steps = plan(row)
            offset = len(sequences)
            for chain in chains:
                sequences.append(list(chain.prompt_ids + chain.prefix))
                keeps.append(len(chain.prefix) + 1)
            where.append([[(offset + c, k, t) for c, k, t in candidate] for candidate in steps])
        tables: list[torch.Tensor | None] = [None] * len(sequences)
        for rows in self._batches(sequences):
            keep = max(keeps[i] for i in rows)
            logprobs = self._logprobs_at_end([sequences[i] for i in rows], keep)
            for j, i in enumerate(rows):
                tables[i] = logprobs[j, keep - keeps[i]:]  # [keeps[i], vocab]: position k = after k label tokens
        return np.array([[sum(float(tables[c][k, t]) for c, k, t in candidate) for candidate in row]
                         for row in where], dtype=np.float64)

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """log P(label | prompt) over the full vocabulary, [len(prompts), len(labels)]."""
        conts = [self.continuations(prompt, labels) for prompt in prompts]
        single = all(len(c.label_ids) == 1 and c.prompt_ids == row[0].prompt_ids for row in conts for c in row)
        return self._single_token(conts) if single else self._chains(conts)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """``n`` continuations per prompt (greedy when temperature is 0), each cut at the first stop string."""
        encoded = self._encode(prompts)
        results: list[list[str]] = [[] for _ in prompts]
        torch.manual_seed(seed)
        for rows in self._batches(encoded):
            input_ids, mask = self._left_pad([encoded[i] for i in rows])
            width = input_ids.shape[1]
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} \
                if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            output = self.model.generate(
                input_ids=input_ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=self.pad_id,
                stop_strings=list(stop) or None, tokenizer=self.tokenizer if stop else None, **sampling)
            texts = self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
            for j, i in enumerate(rows):
                results[i] = [cut_at_stop(text, stop) for text in texts[j * n:(j + 1) * n]]
        return results

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.name} has no chat template; label without --chat-template")
        wrapped = self.tokenizer.apply_chat_template([{"role": "user", "content": message}],
                                                     tokenize=False, add_generation_prompt=True)
        return wrapped + reply_prefix

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            # a local path is this machine's; the weights id below identifies local weights anywhere
            "model": Path(self.name).name if str(self.weights).startswith("files:") else self.name,
            "weights": self.weights,  # not the path: the same weights elsewhere share cache entries
            "revision": self.revision,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": self.model.device.type,
        }
