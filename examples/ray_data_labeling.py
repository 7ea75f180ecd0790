"""Label a data set with Ray Data: one labeling engine per actor (one vLLM engine per GPU).

    pip install "rlaif[vllm,ray]"
    python examples/ray_data_labeling.py --data Anthropic/hh-rlhf --format hh-rlhf --data-dir harmless-base \\
        --model Qwen/Qwen2.5-7B-Instruct --task harmless --actors 8 --gpus-per-actor 1 --out labels/

Each actor builds its engine once and labels the batches Ray hands it with
``label_pairs`` (both orders, swap-averaged), so the rows are exactly those of
``rlaif label``. The output is a folder of Parquet files that ``rlaif report`` reads.
See docs/ray.md for when to use this instead of ``rlaif label --shard i/n``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import Any

import pandas as pd

from rlaif.label_store import metadata_as_json
from rlaif.pairs import PreferencePair


def pairs_table(pairs) -> pd.DataFrame:
    """Pairs as a flat table Ray can split into batches (metadata as JSON: its keys vary by source)."""
    table = pd.DataFrame([asdict(pair) for pair in pairs])
    table["metadata"] = table["metadata"].map(lambda m: json.dumps(m, ensure_ascii=False))
    table["human_choice"] = table["human_choice"].astype("Int64")  # None stays missing, not NaN
    return table


def table_pairs(batch: pd.DataFrame) -> list[PreferencePair]:
    return [PreferencePair(id=row["id"], context=row["context"], response_1=row["response_1"],
                           response_2=row["response_2"], task=row["task"], metadata=json.loads(row["metadata"]),
                           human_choice=None if pd.isna(row["human_choice"]) else int(row["human_choice"]))
            for row in batch.to_dict("records")]


class Labeler:
    """A Ray Data actor: builds one engine, then labels each batch of pairs it is given."""

    def __init__(self, model: str, task: str, backend: str = "vllm", chat_template: bool = True,
                 engine_options: dict[str, Any] | None = None):
        from rlaif.templates import PromptTemplate

        if backend == "vllm":
            from rlaif.backends.vllm_backend import VLLMBackend

            self.backend = VLLMBackend.from_pretrained(model, **(engine_options or {}))
        else:
            from rlaif.backends.transformers_backend import TransformersBackend

            self.backend = TransformersBackend.from_pretrained(model, **(engine_options or {}))
        self.template, self.chat_template = PromptTemplate(task), chat_template

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from rlaif.labeler import label_pairs

        labels = label_pairs(table_pairs(batch), self.backend, self.template, chat_template=self.chat_template,
                             progress=False)
        return metadata_as_json(labels)


def label_with_ray(pairs, out: str, *, model: str, task: str, backend: str = "vllm", actors: int = 1,
                   gpus_per_actor: float = 0, batch_size: int = 256, chat_template: bool = True,
                   engine_options: dict[str, Any] | None = None) -> None:
    """Label ``pairs`` on ``actors`` Ray actors and write the rows to the Parquet folder ``out``."""
    import ray

    dataset = ray.data.from_pandas(pairs_table(pairs))
    labeled = dataset.map_batches(
        Labeler, fn_constructor_kwargs={"model": model, "task": task, "backend": backend,
                                        "chat_template": chat_template, "engine_options": engine_options},
        batch_size=batch_size, batch_format="pandas", concurrency=actors, num_gpus=gpus_per_actor)
    labeled.write_parquet(out)


def main(argv: list[str] | None = None) -> None:
    import ray

    from rlaif.loaders import DEFAULT_TASK, load_pairs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--format", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--task", help="template task (default: the format's)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--actors", type=int, default=1, help="engines, e.g. one per GPU")
    parser.add_argument("--gpus-per-actor", type=float, default=0, help="1 on GPU machines (tensor parallel: more)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per batch an actor labels at once")
    parser.add_argument("--engine-options", default="{}", help="JSON options for the engine, e.g. "
                                                               '\'{"max_model_len": 4096}\'')
    parser.add_argument("--no-chat-template", dest="chat_template", action="store_false")
    parser.add_argument("--out", required=True, help="output folder of Parquet files")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.data, args.format, limit=args.limit, split=args.split,
                       **({"data_dir": args.data_dir} if args.data_dir else {}))
    ray.init(ignore_reinit_error=True, runtime_env={"env_vars": {
        key: value for key, value in os.environ.items() if key.startswith(("VLLM_", "OMP_", "HF_"))}})
    label_with_ray(pairs, args.out, model=args.model, task=args.task or DEFAULT_TASK[args.format],
                   backend=args.backend, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                   batch_size=args.batch_size, chat_template=args.chat_template,
                   engine_options=json.loads(args.engine_options))
    print(f"wrote {len(pairs)} labeled pairs to {args.out}; summary: rlaif report {args.out}")


if __name__ == "__main__":
    main()
