"""In-process labeling with a transformers causal LM (CPU or GPU).

Labels are scored as continuations of the prompt by the boundary rule in
``rlaif.backends.label_tokens``. When every label is one token after the prompt
(the usual "1"/"2"), one read of the next-token log-probs per prompt scores them
(the fast path). Otherwise each label's log-likelihood is the sum over its tokens,
from one sequence per "chain" (the prompt plus a shared label prefix).

Speed: prefixes that prompts share (preamble and exemplars across a job, the
context across both orders of a pair) run once and are reused as key/value caches
(``rlaif.backends.shared_prefix``); the rest runs in length-sorted batches capped by
tokens; only the positions that are read go through the output layer.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from rlaif.backends.base import cut_at_stop
from rlaif.backends.batching import token_batches
from rlaif.backends.cpu_precision import Bf16Linear, default_dtype, to_mixed_precision
from rlaif.backends.label_tokens import Continuation, plan
from rlaif.backends.models import DEFAULT_MODEL, resolve_model
from rlaif.backends.prompt_tokens import PromptTokens
from rlaif.backends.shared_prefix import PrefixNode, common_length, prefix_tree

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: "mixed": the decoder's linear layers in bf16, everything else in fp32 (see ``cpu_precision``).
PRECISIONS = (*DTYPES, "mixed")
#: A key/value cache as (keys, values) per layer, batch 1; None for an empty prefix.
KV = list[tuple[torch.Tensor, torch.Tensor]] | None


class TransformersBackend:
    """Scores label tokens from a causal LM, reusing shared prefixes, in token-capped batches.

    ``max_batch_tokens`` caps rows x padded length of a batch (the compute and activation
    memory of one pass); ``batch_size`` caps its rows. A shared prefix shorter than
    ``min_shared_prefix`` tokens is not worth a pass of its own (on 2 CPU cores one pass
    of a 135M model costs about as much as 30 tokens). The caches of the last
    ``prefix_cache_entries`` prefixes that many prompts shared are kept between calls.
    ``share_prefixes=False`` runs every prompt whole (the reference the shared path is
    tested against).
    """

    #: Pairs the labeler sends per call: bigger calls gain little in process (batches are capped by
    #: tokens here anyway), and small steps write progress to disk often on a slow CPU.
    pairs_per_step = 8

    def __init__(self, model, tokenizer, *, name: str, batch_size: int = 64, max_batch_tokens: int = 4096,
                 share_prefixes: bool = True, min_shared_prefix: int = 32, prefix_cache_entries: int = 8,
                 source: str = "",
                 revision: str | None = None, max_prompt_tokens: int | None = None, weights: str | None = None):
        if batch_size < 1 or max_batch_tokens < 1 or min_shared_prefix < 1:
            raise ValueError("batch_size, max_batch_tokens and min_shared_prefix must be at least 1, "
                             f"got {batch_size}, {max_batch_tokens}, {min_shared_prefix}")
        self.model, self.tokenizer, self.name, self.batch_size = model.eval(), tokenizer, name, batch_size
        self.tokens = PromptTokens(tokenizer, name)
        self.max_batch_tokens = max_batch_tokens
        self.share_prefixes, self.min_shared_prefix = share_prefixes, min_shared_prefix
        self._base = model.base_model  # the decoder without the output layer
        #: "mixed" when the decoder's linear layers run in bf16 (see ``cpu_precision``), else the weights' dtype.
        self.precision = "mixed" if any(isinstance(m, Bf16Linear) for m in model.modules()) \
            else str(model.dtype).removeprefix("torch.")
        # transformers 5.2x renamed past_key_values to cache
        self._cache_kw = "cache" if "cache" in inspect.signature(self._base.forward).parameters else "past_key_values"
        self.prefix_cache_entries = prefix_cache_entries
        self._remembered: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        #: Work done by scoring so far: forward passes, real tokens run, and padding run beside them.
        self.stats = {"passes": 0, "tokens": 0, "padding": 0}
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
    def from_pretrained(cls, name: str = DEFAULT_MODEL, *, dtype: str | None = None, device: str = "cpu",
                        revision: str | None = None, max_prompt_tokens: int | None = None,
                        **options) -> "TransformersBackend":
        """Load by catalogue name, local folder, local .gguf file or hub name (see ``resolve_model``).

        ``dtype``: "float32", "bfloat16", "float16", or "mixed" (bf16 linear layers, labels read
        in fp32); None picks "mixed" on a CPU with bf16 matrix units and "float32" elsewhere.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = dtype or default_dtype(device)
        if dtype not in PRECISIONS:
            raise ValueError(f"dtype must be one of {sorted(PRECISIONS)}, got {dtype!r}")
        resolved = resolve_model(name)
        kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        if resolved.gguf_file:
            kwargs["gguf_file"] = resolved.gguf_file
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=DTYPES.get(dtype, torch.float32),
                                                     **kwargs).to(device)
        if dtype == "mixed":
            to_mixed_precision(model)
        return cls(model, tokenizer, name=name, source=resolved.describe(), revision=revision,
                   max_prompt_tokens=max_prompt_tokens, weights=resolved.weights_id(), **options)

    # ---------------------------------------------------------------- tokens

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokens.encode(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.tokens.count_tokens(texts)

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        return self.tokens.continuations(prompt, labels)

    # ---------------------------------------------------------------- scoring

    @torch.inference_mode()
    def _logprobs_at_end(self, sequences: Sequence[Sequence[int]], reads: Sequence[int]) -> list[torch.Tensor]:
        """Next-token log-probs (over the whole vocabulary) at the last ``reads[i]`` positions of
        sequence i: one [reads[i], vocab] tensor each, in input order.

        Shared prefixes run once (see ``shared_prefix``); each node's leaves run their own
        tokens in length-sorted, token-capped batches on top of the node's key/value cache.
        """
        min_shared = self.min_shared_prefix if self.share_prefixes else max(map(len, sequences), default=0) + 1
        tree = prefix_tree(sequences, reads, min_shared)
        results: list[torch.Tensor | None] = [None] * len(sequences)
        self._run_node(tree, sequences, reads, None, 0, results)
        return results  # type: ignore[return-value]

    def _run_node(self, node: PrefixNode, sequences, reads, kv: KV, done: int, results: list) -> None:
        """Score ``node``'s leaves and recurse; ``kv`` holds the cache of the first ``done`` tokens."""
        if node.end > done:
            kv = self._prefix_kv(tuple(sequences[node.first][:node.end]), kv, done, keep=node.size() >= 4)
        lengths = [len(sequences[i]) - node.end for i in node.leaves]
        for batch in token_batches(lengths, self.max_batch_tokens, self.batch_size):
            rows = [node.leaves[j] for j in batch]
            tables = self._suffix_pass([sequences[i][node.end:] for i in rows], [reads[i] for i in rows], kv, node.end)
            for i, table in zip(rows, tables):
                results[i] = table
        for child in node.children:
            self._run_node(child, sequences, reads, kv, node.end, results)

    def _prefix_kv(self, tokens: tuple[int, ...], kv: KV, done: int, keep: bool) -> KV:
        """The cache of ``tokens``, given ``kv`` for its first ``done`` tokens.

        The labeler sends a job in steps, and each step's prompts start with the same preamble
        and exemplars: caches of prefixes that many sequences shared (``keep``) are remembered,
        the last ``prefix_cache_entries`` of them, and the longest one that agrees is extended.
        """
        for old_tokens, old_kv in self._remembered.items():
            common = common_length(old_tokens, tokens, 0)
            if common > done and common >= self.min_shared_prefix:
                kv, done = [(k[..., :common, :], v[..., :common, :]) for k, v in old_kv], common
        if len(tokens) > done:
            kv = self._extend(kv, tokens[done:], done)
        if keep and self.prefix_cache_entries:
            self._remembered.pop(tokens, None)
            self._remembered[tokens] = kv
            while len(self._remembered) > self.prefix_cache_entries:
                self._remembered.popitem(last=False)
        return kv

    def _decoder(self, input_ids: torch.Tensor, kv: KV, offset: int):
        """The decoder's last hidden states for ``input_ids`` at positions ``offset...``, on top of ``kv``
        (broadcast to the batch), and its cache. No vocabulary logits are computed here."""
        rows, width = input_ids.shape
        device = self.model.device
        cache = DynamicCache() if kv is None else DynamicCache(
            ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv])
        positions = torch.arange(offset, offset + width, device=device).unsqueeze(0).expand(rows, -1)
        # Right padding: pads follow every real token, so the causal mask alone keeps them out of
        # what is read, and no attention mask is needed.
        out = self._base(input_ids=input_ids.to(device), position_ids=positions, use_cache=True,
                         **{self._cache_kw: cache})
        return out.last_hidden_state, getattr(out, self._cache_kw)

    def _extend(self, kv: KV, tokens: Sequence[int], offset: int) -> KV:
        """The cache of a prefix extended by ``tokens`` (one sequence)."""
        _, cache = self._decoder(torch.tensor([list(tokens)]), kv, offset)
        self._count(len(tokens), 0)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _suffix_pass(self, suffixes: list[Sequence[int]], reads: list[int], kv: KV, offset: int) -> list[torch.Tensor]:
        """Run right-padded suffixes on top of a shared prefix and read each one's last positions."""
        width = max(map(len, suffixes))
        input_ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long)
        for row, ids in enumerate(suffixes):
            input_ids[row, :len(ids)] = torch.tensor(list(ids))
        hidden, _ = self._decoder(input_ids, kv, offset)
        real = sum(map(len, suffixes))
        self._count(real, input_ids.numel() - real)
        rows = torch.tensor([r for r, (ids, n) in enumerate(zip(suffixes, reads)) for _ in range(n)])
        cols = torch.tensor([p for ids, n in zip(suffixes, reads) for p in range(len(ids) - n, len(ids))])
        logprobs = torch.log_softmax(self._logits(hidden[rows.to(hidden.device), cols.to(hidden.device)]).float(), -1)
        return list(logprobs.cpu().split(list(reads)))

    def _count(self, tokens: int, padding: int) -> None:
        self.stats["passes"] += 1
        self.stats["tokens"] += tokens
        self.stats["padding"] += padding

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer on the hidden states that are read, only: [n, vocab], never [batch, seq, vocab]."""
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def _single_token(self, conts: list[list[Continuation]]) -> np.ndarray:
        """Fast path: every label is one token after an unchanged prompt; one read per prompt."""
        tables = self._logprobs_at_end([row[0].prompt_ids for row in conts], [1] * len(conts))
        index = torch.tensor([[c.label_ids[0] for c in row] for row in conts])
        return torch.gather(torch.cat(tables), 1, index).double().numpy().reshape(len(conts), -1)

    def _chains(self, conts: list[list[Continuation]]) -> np.ndarray:
        """Any labels: sum of token log-probs, from one pass per chain (see label_tokens.plan)."""
        sequences, reads, where = [], [], []
        for row in conts:
            chains, steps = plan(row)
            offset = len(sequences)
            for chain in chains:
                sequences.append(chain.prompt_ids + chain.prefix)
                reads.append(len(chain.prefix) + 1)  # position k = after k label tokens
            where.append([[(offset + c, k, t) for c, k, t in candidate] for candidate in steps])
        tables = self._logprobs_at_end(sequences, reads)
        return np.array([[sum(float(tables[c][k, t]) for c, k, t in candidate) for candidate in row]
                         for row in where], dtype=np.float64)

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """log P(label | prompt) over the full vocabulary, [len(prompts), len(labels)]."""
        if not prompts:
            return np.empty((0, len(labels)))
        conts = [self.continuations(prompt, labels) for prompt in prompts]
        single = all(len(c.label_ids) == 1 and c.prompt_ids == row[0].prompt_ids for row in conts for c in row)
        return self._single_token(conts) if single else self._chains(conts)

    def _left_pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) with every sequence right-aligned, as ``generate`` wants them."""
        width = max(map(len, batch))
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        return input_ids, mask

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """``n`` continuations per prompt (greedy when temperature is 0), each cut at the first stop string."""
        with torch.random.fork_rng():  # seeded sampling without moving the caller's random state
            torch.manual_seed(seed)
            return self._generate(self._encode(prompts), max_new_tokens, temperature, n, stop)

    def _generate(self, encoded: list[list[int]], max_new_tokens: int, temperature: float, n: int,
                  stop: Sequence[str]) -> list[list[str]]:
        results: list[list[str]] = [[] for _ in encoded]
        # a batch holds rows x n sequences that grow by max_new_tokens
        for rows in token_batches([(len(ids) + max_new_tokens) * n for ids in encoded], self.max_batch_tokens,
                                  self.batch_size):
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
        return self.tokens.chat_prompt(message, reply_prefix)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            # a local path is this machine's; the weights id below identifies local weights anywhere
            "model": Path(self.name).name if str(self.weights).startswith("files:") else self.name,
            "weights": self.weights,  # not the path: the same weights elsewhere share cache entries
            "revision": self.revision,
            "dtype": self.precision,
            "device": self.model.device.type,
        }
