"""One self-contained HTML file: the report's numbers, tables and plots (PNG embedded as base64)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from rlaif.analysis import agreement, biases, calibration, plots
from rlaif.analysis.report import analyze, format_report
from rlaif.file_writes import atomic_write_bytes

STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1rem}img{max-width:100%;margin:.5rem 0 1.5rem}
figure{margin:0}h2{margin-top:2rem;border-bottom:1px solid #ddd}"""


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(float_format=lambda x: f"{x:.3f}", border=0, na_rep="n/a")


def _pairs_links(href: str) -> str:
    """Links into the pair browser (``rlaif browse``), each opening a view its URL hash names."""
    views = [("every pair", ""), ("disagreements with people", "#filter=disagree"),
             ("same position in both orders", "#filter=flip"), ("least confident first", "#sort=confidence"),
             ("most confident disagreements", "#filter=disagree&sort=-confidence")]
    links = ", ".join(f'<a href="{html.escape(href + view)}">{name}</a>' for name, view in views)
    return f"<p>The pairs behind these numbers, with their texts (pair browser): {links}.</p>"


def render_html(labels: pd.DataFrame, *, title: str = "rlaif report", by: str = "task", bins: int = 10,
                tie_band: float = 0.0, pairs_href: str | None = None) -> str:
    """The whole report as an HTML page; every figure is embedded, so the file stands alone.
    ``pairs_href`` links the page to a pair browser written by ``rlaif browse``."""
    result = analyze(labels, by=by, bins=bins, tie_band=tie_band)
    sections = [f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(format_report(result))}</pre>"]
    if pairs_href is not None:
        sections.insert(1, _pairs_links(pairs_href))

    sections += ["<h2>Alignment</h2>",
                 "<p>Share of pairs whose averaged AI choice equals the human choice (human ties excluded), "
                 "with a 95% bootstrap interval.</p>",
                 f'<img alt="alignment per group" src="{_png(plots.alignment_by_group(labels, by=by))}">',
                 _table(agreement.alignment_by_group(labels, by=by, tie_band=tie_band))]
    sections += ["<h2>Calibration</h2>",
                 "<p>Does p mean what it says? Per bin of p, the share of pairs where people preferred "
                 "response 1. The paper keeps only confident pairs: accuracy by confidence below.</p>",
                 f'<img alt="reliability diagram" src="{_png(plots.reliability_diagram(labels, bins=bins))}">',
                 _table(calibration.calibration(labels, bins=bins)["table"]),
                 _table(calibration.accuracy_by_confidence(labels))]
    sections += ["<h2>Position bias</h2>",
                 "<p>Pairs where the labeler preferred the same position in both orders chose by position, "
                 "not content; swap averaging cancels it only on average.</p>",
                 f'<img alt="position bias" src="{_png(plots.position_bias_bars(labels))}">']
    if {"length_1", "length_2"} <= set(labels.columns):
        sections += ["<h2>Length bias</h2>",
                     f'<img alt="length bias" src="{_png(plots.length_bias_plot(labels))}">',
                     _table(biases.length_bias(labels, tie_band=tie_band)["table"])]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")


def write_html(labels: pd.DataFrame, path: str | Path, *, pairs: str | Path | None = None, **kwargs) -> Path:
    """Write the report; ``pairs`` (a pair browser's file) is linked by its path relative to the
    report, so the two files can be moved or shared together."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if pairs is not None:
        relative = os.path.relpath(Path(pairs).resolve(), path.parent.resolve())
        kwargs["pairs_href"] = quote(Path(relative).as_posix())
    atomic_write_bytes(path, render_html(labels, **kwargs).encode())
    return path
