"""The report as a document: a list of blocks (headings, paragraphs, tables, images) built from the
results, rendered to Markdown or to a self-contained-looking HTML page (images stay separate PNGs).

    >>> blocks = build_document(results, verdicts, figures)
    >>> Path("report.md").write_text(render_markdown(blocks))
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvae.training.report_figures import BASIS_TILES
from pvae.training.report_verdict import FAMILY_NAMES, Verdict

__all__ = [
    "FORMATS",
    "Block",
    "build_document",
    "relative",
    "render",
    "render_html",
    "render_markdown",
    "verdict_table_markdown",
]

FORMATS = ("md", "html")


@dataclass(frozen=True)
class Block:
    """One element of the document. kind: h1, h2, h3, p, list, table, img, code."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    """Bullet items (list) or table header cells (table)."""
    rows: tuple[tuple[str, ...], ...] = ()
    """Table rows."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def verdict_table_markdown(verdicts: Sequence[Verdict]) -> str:
    """The verdict table alone, as Markdown (for the README)."""
    return render_markdown([_verdict_table(verdicts)]).strip()


def _verdict_table(verdicts: Sequence[Verdict]) -> Block:
    rows = tuple((v.claim, v.paper, v.ours, f"**{v.status}**", v.reason or "") for v in verdicts)
    return Block("table", items=("claim", "paper", "ours", "verdict", "likely reason / note"), rows=rows)


def _patch_blocks(patches: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    blocks = [Block("h2", "1. Basis vectors (natural patches, lin|lin)")]
    gabor = patches["models"][patches["reference"]]["gabor"]
    blocks.append(Block("p", (
        f"Each active basis vector (mean KL above the family's threshold; at most "
        f"{int(patches['gabor_filters'])} per model, largest KL first; sparse coding: most used first) of the "
        "reference P-VAE, the baselines and the sparse-coding dictionaries gets a 2-D Gabor fit. A filter is "
        f"**Gabor-like** when the fit explains R² ≥ {gabor['r2_threshold']:g} of its "
        f"variance and the envelope's narrow axis is at most {gabor['envelope_fraction']:g} of the patch side "
        "(localised and oriented; a global plane wave or plaid, PCA-like, fails the second test).")))
    if "basis_compare" in figures:
        blocks.append(Block("img", figures["basis_compare"], items=("P-VAE vs G-VAE basis vectors",)))
    rows: list[tuple[str, ...]] = []
    for name, model in list(patches["models"].items()) + list(patches.get("sparse_coding", {}).items()):
        g = model.get("gabor", {})
        if not g.get("n_fitted"):
            continue
        rows.append((name, _fmt(g.get("n_fitted"), 0), _fmt(g.get("fraction_gabor_like"), 2),
                     _fmt(g.get("fraction_r2_above"), 2), _fmt(g.get("median_r2"), 2),
                     _fmt(g.get("median_envelope_narrow_px"), 1), _fmt(g.get("median_envelope_long_px"), 1)))
    blocks.append(Block("table", items=("model", "filters fitted", "Gabor-like", "R² ≥ thr", "median R²",
                                        "narrow σ (px)", "long σ (px)"), rows=tuple(rows)))
    if "gabor_r2" in figures:
        blocks.append(Block("img", figures["gabor_r2"], items=("cumulative distribution of the Gabor R²",)))
    grids = [(k, v) for k, v in figures.items() if k.startswith("basis_grid/")]
    if grids:
        blocks.append(Block("p", f"Basis grids of every model (first {BASIS_TILES} by KL or usage): "
                            + ", ".join(f"[{k.split('/', 1)[1]}]({v})" for k, v in grids) + "."))

    blocks.append(Block("h2", "2. Active latents"))
    thresholds = sorted({(m["family"], m["metrics"]["active_kl_threshold"]) for m in patches["models"].values()})
    blocks.append(Block("p", "Fraction of latents whose mean KL over validation patches exceeds the threshold ("
                        + ", ".join(f"{FAMILY_NAMES[f]}: {t:g}" for f, t in thresholds)
                        + "; pvae-model.md). A converged linear G-VAE is probabilistic PCA and keeps the latents "
                        "whose data variance exceeds the noise level β/2: "
                        f"{_fmt(patches['ppca']['active_fraction'], 2)} of K on these patches."))
    rows = [(str(n), m["family"], _fmt(m["beta"], 2), _fmt(m["metrics"]["active_fraction"], 3),
             _fmt(m["metrics"]["kl"], 1), _fmt(m["metrics"]["mse_map"], 1),
             _fmt(m["metrics"].get("lifetime_sparsity"), 3), _fmt(m["magnitude_lifetime_sparsity"], 3),
             _fmt(m["train_seconds"], 0)) for n, m in patches["models"].items()]
    blocks.append(Block("table", items=("model", "family", "β", "active fraction", "KL", "mse_map",
                                        "lifetime sparsity (z)", "lifetime sparsity (|z|)", "train s"),
                        rows=tuple(rows)))
    if "active" in figures:
        blocks.append(Block("img", figures["active"], items=("active latents",)))

    blocks.append(Block("h2", "3. Reconstruction against sparsity"))
    blocks.append(Block("p", "mse_map (sum of squared errors over the 256 pixels, decoding the mean code) against "
                        "lifetime sparsity (Treves-Rolls, exact samples; for signed codes the magnitudes |z|, "
                        "which is what the plot and the `|z|` column use). Sparse coding: 1/2‖x − Φa‖² + λ‖a‖₁ "
                        "with a learned, unit-norm dictionary of the same K."))
    rows = [(f"P-VAE β={r['beta']:g}", _fmt(r["mse_map"], 1), _fmt(r["lifetime_sparsity"], 4),
             _fmt(r["population_sparsity"], 4)) for r in sorted(patches["beta_sweep"], key=lambda r: r["beta"])]
    rows += [(n, _fmt(r["metrics"]["mse"], 1), _fmt(r["metrics"]["lifetime_sparsity"], 4),
              _fmt(r["metrics"]["population_sparsity"], 4)) for n, r in patches.get("sparse_coding", {}).items()]
    blocks.append(Block("table", items=("model", "mse_map / mse", "lifetime sparsity", "population sparsity"),
                        rows=tuple(rows)))
    if "tradeoff" in figures:
        blocks.append(Block("img", figures["tradeoff"], items=("mse_map vs lifetime sparsity",)))
    amort = patches.get("amortisation")
    if amort:
        m = amort.get("matched") or {}
        blocks.append(Block("p", (
            f"**Amortisation gap.** Non-negative LCA run on {amort['model']}'s own dictionary (λ = "
            + ", ".join(f"{p['lam']:.3g}" for p in amort["points"])
            + f"). At the P-VAE's lifetime sparsity {_fmt(amort['pvae']['lifetime_sparsity'], 4)}, LCA reaches "
            f"mse {_fmt(m.get('mse'), 1)} ({m.get('how', '—')}) against the encoder's mse_map "
            f"{_fmt(amort['pvae']['mse_map'], 1)}: a gap of {_fmt(amort.get('gap'), 1)} "
            f"({_fmt(100 * amort['relative_gap'] if amort.get('relative_gap') is not None else None, 1)}% of the "
            "P-VAE's error).")))
    return blocks


def _classification_blocks(classification: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    blocks = [Block("h2", "4. Few-label classification (kNN, k = 5)")]
    blocks.append(Block("p", "Features: log λ (P-VAE), μ (G/L-VAE), logits (C-VAE). A kNN classifier is trained "
                        "on N labelled points drawn from one half of the evaluation set and scored on the other "
                        "half; mean ± 95% CI over the draws. MNIST is not available offline, so Fashion-MNIST "
                        "stands in for it."))
    for dataset, study in classification.items():
        budgets = [str(b) for b in study["budgets"]]
        blocks.append(Block("h3", f"{dataset} ({study['arch']}, {study['epochs']} epochs, "
                            f"{study['n_eval']} evaluation images)"))
        rows = []
        for k in sorted(study["runs"], key=int):
            for family, run in study["runs"][k].items():
                cells = [f"{run['knn'][b]['mean']:.3f} ± {run['knn'][b]['ci95']:.3f}" if b in run["knn"] else "—"
                         for b in budgets]
                rows.append((k, FAMILY_NAMES[family], *cells, _fmt(run["metrics"]["active_fraction"], 2)))
        blocks.append(Block("table", items=("K", "model", *[f"N={b}" for b in budgets], "active fraction"),
                            rows=tuple(rows)))
        pool = study["n_eval"] // 2
        if any(int(b) >= pool for b in budgets):
            blocks.append(Block("p", f"The labelled pool is half of the evaluation set ({pool} images): a budget "
                                "that uses all of it draws the same labels every time, so its CI is 0."))
        if f"knn/{dataset}" in figures:
            blocks.append(Block("img", figures[f"knn/{dataset}"], items=(f"kNN accuracy, {dataset}",)))
    blocks.append(Block("h2", "5. Shattering dimensionality"))
    blocks.append(Block("p", "Mean test accuracy of logistic regressions (standardised features, L2, C = 1) over "
                        "balanced 5-vs-5 splits of the 10 classes (126 distinct splits), trained on one half of the "
                        "evaluation set and scored on the other."))
    rows = []
    for dataset, study in classification.items():
        for k in sorted(study["runs"], key=int):
            for family, run in study["runs"][k].items():
                s = run["shattering"]
                rows.append((dataset, k, FAMILY_NAMES[family], f"{s['mean']:.3f} ± {s['ci95']:.3f}",
                             f"{s['n_splits']} / {s['n_splits_total']}", str(s["n_train"])))
    blocks.append(Block("table", items=("dataset", "K", "model", "shattering", "splits", "train samples"),
                        rows=tuple(rows)))
    if "shattering" in figures:
        blocks.append(Block("img", figures["shattering"], items=("shattering dimensionality",)))
    return blocks


def build_document(results: Mapping[str, Any], verdicts: Sequence[Verdict], figures: Mapping[str, str]) -> list[Block]:
    """The whole report. ``figures`` maps figure ids to paths relative to the report."""
    meta = results["meta"]
    blocks = [Block("h1", "P-VAE against its baselines: which of the paper's claims hold on our data")]
    blocks.append(Block("p", (
        f"`{meta['command']}` — mode **{meta['mode']}**, {meta['wall_seconds'] / 60:.1f} min wall time on "
        f"{meta['device']} ({meta['cpu_count']} CPUs, {meta['torch_threads']} torch thread(s); load average "
        f"{meta['load_start']:.1f} at the start, {meta['load_end']:.1f} at the end), pvae {meta['pvae_version']}, "
        f"torch {meta['torch_version']}, {meta['finished']}. Every number below is in `report.json`; the verdicts "
        "are computed from those numbers (`pvae.training.report_verdict`).")))
    blocks.append(Block("h2", "Verdict"))
    blocks.append(_verdict_table(verdicts))
    if results.get("deviations"):
        blocks.append(Block("h3", "How this run differs from the paper"))
        blocks.append(Block("list", items=tuple(results["deviations"])))
    if results.get("patches"):
        blocks += _patch_blocks(results["patches"], figures)
    if results.get("classification"):
        blocks += _classification_blocks(results["classification"], figures)
    blocks.append(Block("h2", "Configuration"))
    blocks.append(Block("code", json.dumps(results["config"], indent=1)))
    return blocks


# ----------------------------------------------------------------------------- renderers


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            lines = ["| " + " | ".join(_md_cell(c) for c in b.items) + " |",
                     "|" + "|".join("---" for _ in b.items) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif b.kind == "img":
            out.append(f"![{b.items[0] if b.items else ''}]({b.text})")
        elif b.kind == "code":
            out.append(f"```json\n{b.text}\n```")
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    return "\n\n".join(out) + "\n"


_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"), (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
           (re.compile(r"\[([^\]]+)\]\(([^)]+)\)"), r'<a href="\2">\1</a>')]


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def render_html(blocks: Sequence[Block]) -> str:
    body: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{_inline(c)}</th>" for c in b.items)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b.kind == "img":
            alt = html.escape(b.items[0] if b.items else "")
            body.append(f'<p><img src="{html.escape(b.text)}" alt="{alt}"></p>')
        elif b.kind == "code":
            body.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;"
             "font-size:.9em;vertical-align:top}img{max-width:100%}pre{background:#f6f6f6;padding:1em;"
             "overflow:auto;font-size:.8em}")
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>pvae-report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def render(blocks: Sequence[Block], fmt: str) -> str:
    """Markdown (md) or HTML (html)."""
    if fmt == "md":
        return render_markdown(blocks)
    if fmt == "html":
        return render_html(blocks)
    raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (for links inside the report)."""
    return path.relative_to(root).as_posix()
