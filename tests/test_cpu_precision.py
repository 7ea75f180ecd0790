"""Mixed precision on CPU: the body's linear layers in bf16, the labels read in fp32.

The SmolLM2 tests are marked ``model`` (the embedded model loads in ~25 s); the rest use a tiny random Llama.
"""

import copy

import numpy as np
import pytest
import torch

from rlaif.backends import cpu_precision
from rlaif.backends.cpu_precision import Bf16Linear, bf16_matrix_units, default_dtype, to_mixed_precision
from rlaif.backends.models import DEFAULT_MODEL
from rlaif.backends.transformers_backend import TransformersBackend

PROMPTS = ["Which number comes after one? Answer with 1 or 2.\n1) two\n2) seven\nAnswer=",
           "Pick the kinder reply.\n1) Go away.\n2) Happy to help!\nAnswer="]


def cpuinfo(tmp_path, name: str, flags: str) -> str:
    path = tmp_path / name
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_bf16_matrix_units_are_read_from_the_cpu_flags(tmp_path):
    assert bf16_matrix_units(cpuinfo(tmp_path, "amx", "avx512f amx_tile amx_bf16 avx512_bf16")) == "amx_bf16"
    assert bf16_matrix_units(cpuinfo(tmp_path, "zen4", "avx512f avx512_bf16")) == "avx512_bf16"
    assert bf16_matrix_units(cpuinfo(tmp_path, "older", "avx512f avx512bw")) is None
    assert bf16_matrix_units(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("units, cpu, gpu", [("amx_bf16", "mixed", "float32"), ("avx512_bf16", "mixed", "float32"),
                                             (None, "float32", "float32")])
def test_the_default_is_mixed_only_on_a_cpu_with_bf16_matrix_units(monkeypatch, units, cpu, gpu):
    monkeypatch.setattr(cpu_precision, "bf16_matrix_units", lambda: units)
    assert default_dtype("cpu") == cpu
    assert default_dtype("cuda") == gpu and default_dtype("cuda:1") == gpu


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama with biased projections (as Qwen2 has) and SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlaif.backends.models import resolve_model

    resolved = resolve_model(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_mixed_precision_converts_only_the_decoders_linear_layers(tiny):
    model = to_mixed_precision(copy.deepcopy(tiny[0]))
    converted = [m for m in model.modules() if isinstance(m, Bf16Linear)]
    assert len(converted) == 3 * 7  # q, k, v, o, gate, up, down per layer
    assert all(m.weight.dtype == torch.bfloat16 for m in converted)
    assert all(m.bias is None or m.bias.dtype == torch.float32 for m in converted)
    assert not any(type(m) is torch.nn.Linear for m in model.model.layers.modules())
    head = model.get_output_embeddings()
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    assert head.weight is model.get_input_embeddings().weight  # still tied, still fp32
    assert model.model.norm.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="fp32"):
        to_mixed_precision(copy.deepcopy(tiny[0]).to(torch.bfloat16))


def test_the_mixed_path_reads_the_labels_in_fp32(tiny):
    """Every input of the final norm and the output layer, and their outputs, are fp32 (fails if the head
    or the residual stream ran in bf16); and the label log-probs stay near fp32's."""
    model, tokenizer = tiny
    mixed = TransformersBackend(to_mixed_precision(copy.deepcopy(model)), tokenizer, name="tiny")
    seen = []

    def record(module, inputs, output):
        seen.append((type(module).__name__, inputs[0].dtype, output.dtype))

    hooks = [mixed.model.get_output_embeddings().register_forward_hook(record),
             mixed.model.model.norm.register_forward_hook(record)]
    try:
        got = mixed.label_logprobs(PROMPTS, ["1", "2"])
    finally:
        for hook in hooks:
            hook.remove()
    assert {name for name, _, _ in seen} == {"Linear", "LlamaRMSNorm"}
    assert all(i == torch.float32 and o == torch.float32 for _, i, o in seen), seen
    exact = TransformersBackend(model, tokenizer, name="tiny").label_logprobs(PROMPTS, ["1", "2"])
    assert mixed.precision == "mixed" and mixed.fingerprint()["dtype"] == "mixed"
    assert np.abs(got - exact).max() < 2e-2 and not np.array_equal(got, exact)


@pytest.mark.model
def test_float32_is_todays_exact_path_and_the_default_follows_the_cpu(monkeypatch, shared_data):
    """``dtype="float32"`` labels exactly as the plain fp32 model does (no layer converted, the same run id
    as before), whatever the CPU; the default takes the mixed path where the CPU has bf16 units."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaif.backends import transformers_backend
    from rlaif.backends.models import resolve_model
    from rlaif.labeler import label_pairs
    from rlaif.loaders import load_pairs
    from rlaif.templates import PromptTemplate

    monkeypatch.setattr(transformers_backend, "default_dtype", lambda device: "mixed")
    exact = TransformersBackend.from_pretrained(DEFAULT_MODEL, dtype="float32")
    assert exact.precision == "float32" and exact.fingerprint()["dtype"] == "float32"
    assert not any(isinstance(m, Bf16Linear) for m in exact.model.modules())
    resolved = resolve_model(DEFAULT_MODEL)
    plain = TransformersBackend(
        AutoModelForCausalLM.from_pretrained(resolved.path, gguf_file=resolved.gguf_file, dtype=torch.float32),
        AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file), name=DEFAULT_MODEL,
        weights=exact.weights)
    pairs = load_pairs(shared_data / "hh-rlhf" / "harmless-base" / "dev.jsonl.gz", "hh-rlhf", limit=3)
    template = PromptTemplate("harmless")
    a = label_pairs(pairs, exact, template, chat_template=True, progress=False)
    b = label_pairs(pairs, plain, template, chat_template=True, progress=False)
    assert a["run_id"].tolist() == b["run_id"].tolist()
    for column in ("logprobs_first_order", "logprobs_swapped_order", "p"):
        assert np.array_equal(np.array(a[column].tolist()), np.array(b[column].tolist())), column

    default = TransformersBackend.from_pretrained(DEFAULT_MODEL)
    assert default.precision == "mixed" and default.fingerprint()["dtype"] == "mixed"
    mixed = label_pairs(pairs, default, template, chat_template=True, progress=False)
    assert mixed["run_id"].iloc[0] != a["run_id"].iloc[0]  # a mixed run never resumes an fp32 file
    assert np.abs(mixed["p"].to_numpy() - a["p"].to_numpy()).max() < 0.02
    with pytest.raises(ValueError, match="dtype must be one of"):
        TransformersBackend.from_pretrained(DEFAULT_MODEL, dtype="int4")


def test_the_direct_scorer_on_the_mixed_path_scores_near_fp32(tiny):
    """1-10 scores read "10".."19" over two tokens (the chain path): on the mixed path the read positions
    still go through the fp32 output layer, so expected scores stay near fp32's."""
    from rlaif.direct_scores import DirectScorer
    from rlaif.templates import PromptTemplate

    model, tokenizer = tiny
    template = PromptTemplate("helpful")
    contexts = ["How do I boil an egg?", "Name a prime number."]
    responses = ["Put it in boiling water for eight minutes.", "Nine."]
    exact = DirectScorer(TransformersBackend(model, tokenizer, name="tiny"), template).score(contexts, responses)
    mixed = DirectScorer(TransformersBackend(to_mixed_precision(copy.deepcopy(model)), tokenizer, name="tiny"),
                         template).score(contexts, responses)
    assert np.abs(mixed["distribution"] - exact["distribution"]).max() < 2e-2
    assert np.abs(mixed["score"] - exact["score"]).max() < 0.1
    assert not np.array_equal(mixed["distribution"], exact["distribution"])
