"""Say which model a name means: a catalogue name, a local folder, a local .gguf file, or a hub name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlaif.backends.catalogue import CATALOGUE

#: The labeler used when none is named (see README, "Choosing the demo's model").
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ResolvedModel:
    """Arguments for ``from_pretrained``: a folder or hub name, plus the GGUF file inside it if any."""

    name: str
    path: str
    gguf_file: str | None
    kind: str  # "catalogue", "local folder", "local gguf" or "hub"

    def describe(self) -> str:
        where = f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path
        return f"{self.name} ({self.kind}: {where})"

    def weights_id(self) -> str | None:
        """What identifies these weights wherever they lie: the catalogue's SHA-256, or the size and
        modification time of local files (so weights replaced in place change every cache key).
        None for hub names: the loaded config's commit hash says it."""
        if self.kind == "catalogue":
            return "sha256:" + CATALOGUE[self.name].sha256
        if self.kind == "hub":
            return None
        root = Path(self.path)
        files = [root / self.gguf_file] if self.gguf_file else sorted(
            f for f in root.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf", ".json") and f.is_file())
        return "files:" + ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def resolve_model(name: str) -> ResolvedModel:
    """Look ``name`` up in the catalogue, then as a local folder, a local .gguf file, then a hub name.

    Catalogue models are checked (and, when in parts, joined into the cache) here;
    nothing is downloaded. A bare name that is none of these is an error listing the
    catalogue, since hub names have the form ``org/name``.
    """
    if name in CATALOGUE:
        from rlaif.backends.model_files import gguf_path

        path = gguf_path(CATALOGUE[name])
        return ResolvedModel(name, str(path.parent), path.name, "catalogue")
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(name, str(path), None, "local folder")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{name}: a model file must be .gguf; otherwise pass the model's folder")
        return ResolvedModel(name, str(path.parent), path.name, "local gguf")
    if name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1:
        raise FileNotFoundError(f"model path {name!r} does not exist")
    if "/" not in name:
        known = "\n".join(f"  {entry.name:20s} {entry.install_command()}" for entry in CATALOGUE.values())
        raise ValueError(f"unknown model {name!r}: not in the catalogue, not a local path, and hub names "
                         f"look like org/name. Catalogue models and how to install them:\n{known}")
    return ResolvedModel(name, name, None, "hub")


def hf_model_path(name: str) -> tuple[str, str, str | None]:
    """(folder or hub name, description, weights id) for loaders that need a Hugging Face folder
    (vLLM, sequence-classification reward models): a GGUF model is converted once (cached)."""
    resolved = resolve_model(name)
    if resolved.gguf_file:
        from rlaif.backends.model_files import hf_folder

        folder = hf_folder(Path(resolved.path) / resolved.gguf_file, Path(name).stem)
        return str(folder), resolved.describe(), resolved.weights_id()
    return resolved.path, resolved.describe(), resolved.weights_id()
