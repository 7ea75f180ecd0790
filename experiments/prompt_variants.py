"""Compare the paper's prompting techniques on the same pairs: one table of alignment, bias, mass, speed.

    python experiments/prompt_variants.py                                   # experiments/prompt_variants.yaml
    python experiments/prompt_variants.py --config my.yaml --limit 50 --model qwen2.5-coder-1.5b

Every variant labels the same pairs with the same model (loaded once), resumably, into
RESULTS/<dataset>/<variant>.jsonl. Then RESULTS/variants.csv / .json / .md hold one row per
(dataset, variant) and one "all" row per variant, and RESULTS/config.json the resolved config.
Flags override the config file; unknown keys in it are an error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

import rlaif
from rlaif.analysis.report import json_safe, markdown_table
from rlaif.config_files import EACH, ConfigError, read_config, schema_of
from rlaif.direct_scores import score_pairs
from rlaif.prompting import Prompting

HERE = Path(__file__).resolve().parent
CONFIG_SCHEMA = {
    "model": None,
    "chat_template": None,
    "batch_size": None,
    "results": None,
    "datasets": {EACH: {"format": None, "path": None, "task": None, "limit": None}},
    "variants": {EACH: schema_of(Prompting, direct=None)},  # Prompting fields, or {direct: true}: 1-10 scoring
}


def load_config(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "prompt_variants.yaml"))
    parser.add_argument("--model")
    parser.add_argument("--limit", type=int, help="pairs per data set (overrides each data set's limit)")
    parser.add_argument("--results")
    parser.add_argument("--variants", help="comma-separated subset of the config's variants")
    args = parser.parse_args(argv)
    config = read_config(args.config, CONFIG_SCHEMA)
    for key in ("model", "results"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    if args.limit:
        for dataset in config["datasets"].values():
            dataset["limit"] = args.limit
    if args.variants:
        config["variants"] = {name: config["variants"][name] for name in args.variants.split(",")}
    for name, variant in config["variants"].items():
        if not variant.get("direct"):
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in variant.items()}
            try:
                Prompting(**fields)  # bad values fail here, before any model loads (the schema checked the keys)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{args.config}: variants.{name}: {error}") from None
    return config


def main(argv=None, backend=None) -> pd.DataFrame:
    config = load_config(argv)
    results = Path(config["results"])
    results.mkdir(parents=True, exist_ok=True)
    if backend is None:
        backend = rlaif.TransformersBackend.from_pretrained(config["model"], batch_size=config.get("batch_size", 8))
    (results / "config.json").write_text(json.dumps({**config, "backend": backend.fingerprint()}, indent=2) + "\n")

    rows = []
    for dataset_name, dataset in config["datasets"].items():
        pairs = rlaif.load_pairs(dataset["path"], dataset["format"], limit=dataset.get("limit"))
        for name, variant in config["variants"].items():
            out = results / dataset_name / f"{name}.jsonl"
            print(f"{dataset_name} / {name}: {len(pairs)} pairs -> {out}", flush=True)
            started = time.time()
            if variant.get("direct"):
                scorer = rlaif.DirectScorer(backend, rlaif.PromptTemplate(dataset["task"]),
                                            chat_template=config["chat_template"])
                labels = score_pairs(pairs, scorer, out=out, progress=False)
            else:
                prompting = Prompting(**{k: tuple(v) if isinstance(v, list) else v for k, v in variant.items()})
                template = rlaif.PromptTemplate(dataset["task"], (prompting.preambles or ("base",))[0])
                labels = rlaif.label_pairs(pairs, backend, template, chat_template=config["chat_template"],
                                           prompting=prompting, out=out, progress=False)
            seconds = time.time() - started
            summary = rlaif.summarize(labels)
            rows.append({"dataset": dataset_name, "variant": name, "pairs": summary["pairs"],
                         "alignment": summary["alignment"],
                         "same_position": summary["position_bias"]["same_position_both_orders"],
                         "mean_candidate_mass": summary["mean_candidate_mass"],
                         "seconds_per_pair": seconds / max(summary["pairs"], 1),
                         "agree": summary["alignment"] * summary["pairs_scored"], "scored": summary["pairs_scored"]})

    table = pd.DataFrame(rows)
    overall = table.groupby("variant", sort=False).apply(lambda g: pd.Series({
        "dataset": "all", "pairs": g["pairs"].sum(), "alignment": g["agree"].sum() / g["scored"].sum(),
        "same_position": (g["same_position"] * g["pairs"]).sum() / g["pairs"].sum(),
        "mean_candidate_mass": (g["mean_candidate_mass"] * g["pairs"]).sum() / g["pairs"].sum(),
        "seconds_per_pair": (g["seconds_per_pair"] * g["pairs"]).sum() / g["pairs"].sum()}), include_groups=False)
    table = pd.concat([table, overall.reset_index()], ignore_index=True).drop(columns=["agree", "scored"])
    table.to_csv(results / "variants.csv", index=False)
    (results / "variants.json").write_text(json.dumps(json_safe(table.to_dict(orient="records")), indent=2) + "\n")
    columns = ["dataset", "variant", "pairs", "alignment", "same_position", "mean_candidate_mass", "seconds_per_pair"]
    (results / "variants.md").write_text(markdown_table(table[columns]))
    print(table[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return table


if __name__ == "__main__":
    main()
