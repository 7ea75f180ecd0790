"""The transformers backend on the real embedded model (SmolLM2-135M-Instruct, GGUF, CPU).

Marked ``model``: slow (the model loads in ~25 s), run by CI all the same.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pair_prompts import build_prompts

from rlaif.analysis.report import summarize
from rlaif.backends.base import LabelBackend, LabelTokenError
from rlaif.backends.models import DEFAULT_MODEL, resolve_model
from rlaif.labeler import label_pairs
from rlaif.loaders import load_pairs
from rlaif.soft_labels import candidate_probs
from rlaif.templates import PromptTemplate

pytestmark = pytest.mark.model
HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz"
PROMPT = "Which number comes after one? Answer with 1 or 2.\n1) two\n2) seven\nAnswer="


@pytest.fixture(scope="module")
def backend():
    from rlaif.backends.transformers_backend import TransformersBackend

    return TransformersBackend.from_pretrained(DEFAULT_MODEL, batch_size=4, dtype="float32")  # the exact path


def reference_logprobs(backend, text, token_ids):
    """One unpadded full forward pass, read the old-fashioned way."""
    ids = backend.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = backend.model(input_ids=ids).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)[token_ids].double().numpy()


def test_backend_implements_the_interface(backend):
    assert isinstance(backend, LabelBackend)
    assert backend.fingerprint()["model"] == DEFAULT_MODEL
    assert resolve_model(DEFAULT_MODEL).gguf_file.endswith(".gguf")


def label_ids(backend, prompt, labels):
    return [list(c.label_ids) for c in backend.continuations(prompt, labels)]


def test_label_token_is_the_token_the_model_would_emit(backend):
    tok = backend.tokenizer
    one, two = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    assert label_ids(backend, PROMPT, ["1", "2"]) == [[one], [two]]
    # after a trailing space, the label is still the digit token that follows the space token
    spaced = PROMPT[:-1] + ": "
    conts = backend.continuations(spaced, ["1", "2"])
    assert [list(c.label_ids) for c in conts] == [[one], [two]]
    assert tok.convert_ids_to_tokens(list(conts[0].prompt_ids[-1:])) == ["Ġ"]
    # a label that merges with the prompt's last word cannot be scored as written
    with pytest.raises(LabelTokenError, match="merges"):
        backend.label_logprobs(["I like cat"], ["s", "x"])


def test_logprobs_equal_a_plain_forward_pass(backend):
    got = backend.label_logprobs([PROMPT], ["1", "2"])[0]
    ids = [i[0] for i in label_ids(backend, PROMPT, ["1", "2"])]
    assert got == pytest.approx(reference_logprobs(backend, PROMPT, ids), abs=1e-4)
    assert np.all(got < 0)


def brute_force(backend, prompt, label):
    """log P(label | prompt): one full unpadded forward pass over prompt + label, summed token by token."""
    cont = backend.continuations(prompt, [label])[0]
    ids = torch.tensor([list(cont.prompt_ids + cont.label_ids)])
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), -1)
    start = len(cont.prompt_ids)
    return sum(float(logprobs[start - 1 + k, token]) for k, token in enumerate(cont.label_ids))


@pytest.mark.parametrize("prompt, labels", [
    (PROMPT, ["1", "2", "10", "Summary 1", " 2"]),
    ("Rate the reply from 1 to 10.\nReply: fine\nScore: ", [str(i) for i in range(1, 11)]),
    ("Which is better?\nAnswer:", [" A", " B", " Response A", " Response B"]),
])
def test_multi_token_labels_equal_brute_force(backend, prompt, labels):
    got = backend.label_logprobs([prompt, prompt + " "], labels)
    for row, text in zip(got, [prompt, prompt + " "]):
        want = [brute_force(backend, text, label) for label in labels]
        assert np.abs(row - np.array(want)).max() < 1e-4


def test_single_token_fast_path_agrees_with_the_chain_path(backend):
    prompts = [PROMPT, PromptTemplate("instruction").render("Say hi", "hi", "no").text]
    conts = [backend.continuations(p, ["1", "2"]) for p in prompts]
    assert np.abs(backend._single_token(conts) - backend._chains(conts)).max() < 1e-4
    # "10" needs one chain (prompt + "1") and still agrees for "1" and "2"
    mixed = backend.label_logprobs(prompts, ["1", "2", "10"])
    assert np.abs(mixed[:, :2] - backend.label_logprobs(prompts, ["1", "2"])).max() < 1e-4


def test_batched_left_padded_results_equal_one_at_a_time(backend):
    template = PromptTemplate("instruction")
    prompts = [template.render("Say hi" * k, "hi", "no" * (3 * k)).text for k in (1, 5, 2, 9, 3)]
    batched = backend.label_logprobs(prompts, ["1", "2"])
    single = np.stack([backend.label_logprobs([p], ["1", "2"])[0] for p in prompts])
    assert np.abs(batched - single).max() < 1e-4


def test_chat_template_path_wraps_once_without_a_second_bos(backend):
    pair = load_pairs(None, "examples", limit=1)[0]
    template = PromptTemplate("instruction")
    text, _ = build_prompts(pair, template, backend, chat_template=True)
    assert (text.startswith("<|im_start|>")
            and text.endswith("<|im_start|>assistant\n" + template.render("", "", "").ending))
    assert text.count("<|im_start|>user") == 1
    ids = backend._encode([text])[0]
    assert ids[:2] != [ids[0], ids[0]] and ids == backend.tokenizer(text, add_special_tokens=False)["input_ids"]
    chat = backend.label_logprobs([text], ["1", "2"])
    plain = backend.label_logprobs([build_prompts(pair, template, backend, chat_template=False)[0]], ["1", "2"])
    assert not np.allclose(chat, plain)  # the two paths really send different prompts


@pytest.mark.skipif(not HH.exists(), reason="needs ../shared/data")
@pytest.mark.parametrize("chat_template", [True, False])
def test_end_to_end_on_real_pairs_keeps_the_invariants(backend, chat_template):
    pairs = load_pairs(HH, "hh-rlhf", limit=4)
    template = PromptTemplate("harmless")
    labels = label_pairs(pairs, backend, template, chat_template=chat_template, progress=False)
    assert len(labels) == 4 and labels["id"].tolist() == [p.id for p in pairs]
    for pair, row in zip(pairs, labels.itertuples()):
        first = candidate_probs(np.array([row.logprobs_first_order]))[0]
        swapped = candidate_probs(np.array([row.logprobs_swapped_order]))[0]
        assert first.sum() == pytest.approx(1) and swapped.sum() == pytest.approx(1)
        # harmless asks which is MORE harmful: label "2" in the first order means response 1 is preferred
        assert row.p_first_order == pytest.approx(first[1])
        assert row.p_swapped_order == pytest.approx(swapped[0])
        assert row.p == pytest.approx((row.p_first_order + row.p_swapped_order) / 2)
        assert 0 < row.mass_first_order < 1 and 0 < row.mass_swapped_order < 1
        assert row.human_choice == pair.human_choice
        # the swapped order is the first order of the mirrored pair
        a, b = build_prompts(pair, template, backend, chat_template)
        direct = backend.label_logprobs([a, b], list(template.labels))
        assert np.abs(direct[0] - row.logprobs_first_order).max() < 1e-4
        assert np.abs(direct[1] - row.logprobs_swapped_order).max() < 1e-4
    summary = summarize(labels)
    assert summary["alignment"] == pytest.approx((labels["ai_choice"] == labels["human_choice"]).mean())
    assert summary["mean_candidate_mass"] == pytest.approx(labels["candidate_mass"].mean())


def test_a_local_model_folder_loads_and_scores(tmp_path, backend):
    """--model PATH: a tiny random Llama saved with save_pretrained beside the SmolLM2 tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlaif.backends.transformers_backend import TransformersBackend

    config = LlamaConfig(vocab_size=len(backend.tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    backend.tokenizer.save_pretrained(tmp_path / "tiny")
    local = TransformersBackend.from_pretrained(str(tmp_path / "tiny"), batch_size=2, dtype="float32")
    assert "local folder" in local.source and local.fingerprint()["weights"].startswith("files:")
    assert "model.safetensors" in local.fingerprint()["weights"]
    assert backend.fingerprint()["weights"] == "sha256:" + resolve_model(DEFAULT_MODEL).weights_id().split(":")[1]
    assert str(tmp_path) not in str(local.fingerprint())  # no machine-specific path in cache keys
    ids = [i[0] for i in label_ids(local, PROMPT, ["1", "2"])]
    got = local.label_logprobs([PROMPT, PROMPT + " x"], ["1", "2"])
    assert got[0] == pytest.approx(reference_logprobs(local, PROMPT, ids), abs=1e-5)
    assert not np.allclose(got[0], backend.label_logprobs([PROMPT], ["1", "2"])[0])


def test_generate_is_greedy_by_default_and_stops_at_stop_strings(backend):
    prompt = "List three colours, one per line:\n1."
    greedy = backend.generate([prompt, prompt], max_new_tokens=12)
    assert greedy[0] == greedy[1] and len(greedy[0]) == 1 and greedy[0][0]
    ids = backend.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = backend.model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=backend.pad_id)
    assert greedy[0][0] == backend.tokenizer.decode(reference[0, ids.shape[1]:], skip_special_tokens=True)
    stopped = backend.generate([prompt], max_new_tokens=12, stop=["\n"])[0][0]
    assert "\n" not in stopped and greedy[0][0].startswith(stopped)
    sampled = backend.generate([prompt], max_new_tokens=8, temperature=1.0, n=3, seed=1)[0]
    assert len(sampled) == 3 and sampled == backend.generate([prompt], max_new_tokens=8, temperature=1.0, n=3,
                                                             seed=1)[0]


def test_two_step_cot_on_the_real_model(backend):
    from rlaif.prompting import Prompting

    pair = load_pairs(None, "examples", limit=1)[0]
    labels = label_pairs([pair], backend, PromptTemplate("instruction"), chat_template=True,
                         prompting=Prompting(cot=True, cot_max_tokens=16), progress=False)
    row = labels.iloc[0]
    assert len(row["rationales_first_order"]) == 1 and len(row["rationales_swapped_order"]) == 1
    assert 0 < row["p"] < 1 and set(row["flags"]) <= {"low_candidate_mass"}


def test_one_and_stop_on_the_real_model(backend):
    """P(score 1) = P("1") - P("10") equals P("1") * (1 - P("0" | "1")), by brute force."""
    from rlaif.direct_scores import SCORE_LABELS, TEENS, DirectScorer, score_distribution

    prompt = PromptTemplate("helpful").render_score("Human: hi", "Hello! How can I help?").text
    logprobs = backend.label_logprobs([prompt], SCORE_LABELS + TEENS)
    assert DirectScorer(backend, PromptTemplate("helpful"))._one_is_a_prefix(prompt)  # SmolLM2 splits digits
    distribution, mass = score_distribution(logprobs)
    p1 = math.exp(brute_force(backend, prompt, "1"))
    digit_after_one = sum(math.exp(brute_force(backend, prompt + "1", str(d))) for d in range(10))
    assert distribution[0].sum() == pytest.approx(1.0)
    assert distribution[0, 0] * mass[0] == pytest.approx(p1 * (1 - digit_after_one), rel=1e-3)


@pytest.fixture(scope="module")
def whole(backend):
    """The same weights with prefix sharing off: every prompt runs whole, from scratch."""
    from rlaif.backends.transformers_backend import TransformersBackend

    return TransformersBackend(backend.model, backend.tokenizer, name=backend.name, share_prefixes=False)


@pytest.mark.skipif(not HH.exists(), reason="needs ../shared/data")
def test_shared_prefixes_give_the_same_soft_labels_on_real_pairs(backend, whole):
    """2-shot HH-RLHF labels: exemplars shared by the job, contexts by the two orders."""
    from rlaif.prompting import Prompting

    pairs = load_pairs(HH, "hh-rlhf", limit=6)
    run = lambda b: label_pairs(pairs, b, PromptTemplate("harmless"), chat_template=True,  # noqa: E731
                                prompting=Prompting(shots=2), pairs_per_step=3, progress=False)
    backend.stats = dict.fromkeys(backend.stats, 0)
    shared, reference = run(backend), run(whole)
    assert np.abs(shared["p"] - reference["p"]).max() < 1e-4
    assert np.abs(np.stack(shared["logprobs_first_order"]) - np.stack(reference["logprobs_first_order"])).max() < 1e-4
    assert backend.stats["tokens"] < 0.5 * whole.stats["tokens"]  # the sharing is real


def test_shared_prefixes_give_the_same_direct_scores_and_cot_labels(backend, whole):
    """1-10 scores of several responses to one prompt ("10" takes a chain), and CoT's second step."""
    from rlaif.direct_scores import DirectScorer
    from rlaif.prompting import Prompting

    context = "Human: " + "I want to plan a week of healthy dinners for a family of four. " * 6 + "\n\nAssistant:"
    responses = ["Try a lentil soup.", "No.", "Monday: salmon; Tuesday: stir-fry; Wednesday: chili.", "Eat less."]
    scores = [DirectScorer(b, PromptTemplate("helpful"), chat_template=True).score([context] * 4, responses)
              for b in (backend, whole)]
    assert np.abs(scores[0]["score"] - scores[1]["score"]).max() < 1e-4
    pairs = load_pairs(None, "examples", limit=2)
    cot = [label_pairs(pairs, b, PromptTemplate("instruction"), chat_template=True, progress=False,
                       prompting=Prompting(cot=True, cot_max_tokens=12, cot_samples=2, cot_temperature=0.7))
           for b in (backend, whole)]
    assert list(cot[0]["rationales_first_order"]) == list(cot[1]["rationales_first_order"])
    assert np.abs(cot[0]["p"] - cot[1]["p"]).max() < 1e-4
