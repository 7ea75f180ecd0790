"""A deterministic stand-in engine for tests of bookkeeping (real-model tests live in test_transformers_backend.py)."""

import hashlib
import zlib

import numpy as np

from rlaif.backends.label_tokens import Continuation


class FakeBackend:
    """Prefers the response that contains "GOOD", with a pull toward the position shown first.

    The log-probs are a pure function of the prompt, so the same prompt always gets
    the same numbers, like a real model in inference mode.
    """

    #: As the in-process transformers engine sends them.
    pairs_per_step = 8

    def __init__(self, name="fake", first_bias=0.5, mass=0.5, max_prompt_tokens=None):
        self.name, self.first_bias, self.mass = name, first_bias, mass
        self.max_prompt_tokens = max_prompt_tokens
        self.calls = 0
        self.prompts_seen = []
        self.batches = []

    def count_tokens(self, texts):
        """One token per whitespace-separated word."""
        return [len(text.split()) for text in texts]

    def continuations(self, prompt, labels):
        """The prompt's tokens are its words (as ``count_tokens`` counts them), a label's its characters:
        digits apart, as SmolLM2 writes them, so "10".."19" continue the tokens of "1"."""
        prompt_ids = tuple(zlib.crc32(word.encode()) for word in prompt.split())
        return [Continuation(prompt_ids, tuple(map(ord, label))) for label in labels]

    def label_logprobs(self, prompts, labels):
        self.calls += 1
        self.prompts_seen.extend(prompts)
        self.batches.append(list(prompts))
        rows = []
        for prompt in prompts:
            if "BROKEN" in prompt:  # an engine that returns garbage for this prompt
                rows.append([-np.inf, -np.inf])
                continue
            sample = prompt.rsplit("\n\n", 2)  # [..., "X 1:\n...", "X 2:\n...\nEnding="]
            first_good = "GOOD" in sample[-2]
            second_good = "GOOD" in sample[-1]
            noise = int(hashlib.md5(prompt.encode()).hexdigest()[:4], 16) / 65535 * 0.1
            score = self.first_bias + (1.0 if first_good else 0.0) - (1.0 if second_good else 0.0) + noise
            p_first = 1 / (1 + np.exp(-score))
            rows.append([np.log(self.mass * p_first), np.log(self.mass * (1 - p_first))])
        return np.array(rows)

    def generate(self, prompts, *, max_new_tokens=256, temperature=0.0, n=1, seed=0, stop=()):
        """Rationales that name the response the fake prefers, one per sample, numbered."""
        self.generated = getattr(self, "generated", []) + [dict(prompts=list(prompts), n=n, temperature=temperature,
                                                               max_new_tokens=max_new_tokens, stop=list(stop))]
        return [[f" thought {j} about {len(prompt)} chars." for j in range(n)] for prompt in prompts]

    def chat_prompt(self, message, reply_prefix):
        return f"<user>{message}</user><assistant>{reply_prefix}"

    def fingerprint(self):
        return {"backend": "fake", "model": self.name, "first_bias": self.first_bias, "mass": self.mass}
