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


def _verdict_table(verdicts: Sequence[Verdict]) -> Block:
    rows = tuple((v.claim, v.paper, v.ours, f"**{v.status}**", v.reason or "") for v in verdicts)
    return Block("table", items=("claim", "paper", "ours", "verdict", "likely reason / note"), rows=rows)


def _mean_sd(values: Sequence[float]) -> str:
    arr = [float(v) for v in values if v is not None]
    if not arr:
        return "—"
    if len(arr) == 1:
        return f"{arr[0]:.3g}"
    mean = sum(arr) / len(arr)
    sd = math.sqrt(sum((v - mean) ** 2 for v in arr) / (len(arr) - 1))
    return f"{mean:.3g} ± {sd:.2g}"


def _patch_blocks(patches: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    models = patches["models"]
    ref = patches["reference"]
    paper = patches.get("paper", {})
    blocks = [Block("h2", "1. Basis vectors (natural patches, lin|lin)")]
    gabor = models[ref].get("gabor") or {}
    blocks.append(Block("p", (
        f"The most used basis vectors (largest rise in mse_map when the latent is zeroed; at most "
        f"{int(patches['gabor_filters'])} per model; sparse coding: largest mean |code|) of the reference P-VAE, "
        "the lin|lin baselines and the sparse-coding dictionaries each get a 2-D Gabor fit. A filter is "
        f"**Gabor-like** when the fit explains R² ≥ {gabor.get('r2_threshold', float('nan')):g} of its variance "
        f"and the envelope's narrow axis is at most {gabor.get('envelope_fraction', float('nan')):g} of the patch "
        "side (localised and oriented; a global plane wave or plaid, PCA-like, fails the second test).")))
    if "basis_compare" in figures:
        blocks.append(Block("img", figures["basis_compare"], items=("P-VAE vs G-VAE basis vectors",)))
    rows: list[tuple[str, ...]] = []
    for name, model in list(models.items()) + list(patches.get("sparse_coding", {}).items()):
        g = model.get("gabor") or {}
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
        blocks.append(Block("p", f"Basis grids (first {BASIS_TILES}, most used first): "
                            + ", ".join(f"[{k.split('/', 1)[1]}]({v})" for k, v in grids) + "."))

    blocks.append(Block("h2", "2. Active latents"))
    blocks.append(Block("p", (
        "Four criteria. **usage (mean)**, the one the verdict uses: a latent is active when replacing its "
        "posterior-mean code by its mean over samples raises mse_map by more than a tenth of an equal share of the "
        "data energy (0.1 E / K); **usage (zero)** sets the code to zero instead, which also credits a constant "
        "offset (the G-VAE+ReLU decodes μ, as the paper does). **Table 2**: the paper's rule (KL < "
        "3e-4 is dead; lin encoders: a gap in the histogram of log decoder-column norms ordered by KL; conv "
        "encoders: the last empty bin below the median of the log-KL histogram). **Figure 5**: mean KL per latent "
        "above P 0.0082, G 0.09, L 0.08 (C-VAE: decoder column norm ≥ 4.435). The same criteria on an untrained "
        "model of each family are the control: a criterion that an untrained model passes proves nothing. A "
        "converged linear G-VAE is probabilistic PCA and keeps the directions whose variance exceeds the noise β/2: "
        f"{_fmt(patches['ppca']['active_fraction'], 2)} of K on these patches.")))
    t2 = paper.get("active_table2", {})
    rows = []
    for name, m in models.items():
        fr = m["active"]["fractions"]
        p2 = t2.get(m["family"], {}).get("lin" if m["encoder"] == "lin" else "conv")
        rows.append((name, _fmt(fr.get("usage_mean"), 3), _fmt(fr.get("usage"), 3), _fmt(fr.get("table2"), 3),
                     _fmt(fr.get("kl_threshold"), 3),
                     _fmt(p2, 3), _fmt(m["epochs"], 0)))
    for name, c in (patches.get("untrained") or {}).items():
        fr = c["active"]["fractions"]
        rows.append((f"{name} untrained", _fmt(fr.get("usage_mean"), 3), _fmt(fr.get("usage"), 3),
                     _fmt(fr.get("table2"), 3),
                     _fmt(fr.get("kl_threshold"), 3), "—", "0"))
    blocks.append(Block("table", items=("model", "usage (mean)", "usage (zero)", "Table 2 rule", "Figure 5 KL",
                                        "paper Table 2", "epochs"), rows=tuple(rows)))
    if "active" in figures:
        blocks.append(Block("img", figures["active"], items=("active latents by criterion",)))

    blocks.append(Block("h2", "3. NELBO of every family and loss (Table 4 analogue)"))
    blocks.append(Block("p", "Validation NELBO = mse + KL at β = 1, exact samples (temperature 0), sums over the "
                        "256 pixels; the paper's values are on van Hateren patches (5-seed means), ours on "
                        "scikit-image photographs, one seed and a much shorter budget (see the deviations)."))
    rows = [(r["model"], r["loss"], _fmt(r["epochs"], 0), _fmt(r["nelbo"], 1), _fmt(r["mse"], 1),
             _fmt(r["mse_map"], 1), _fmt(r["kl"], 1), _fmt(r.get("paper_nelbo"), 1)) for r in patches["table4"]]
    blocks.append(Block("table", items=("model", "loss", "epochs", "NELBO", "mse", "mse_map", "KL", "paper NELBO"),
                        rows=tuple(rows)))
    comp = paper.get("components", {})
    if comp:
        blocks.append(Block("p", "Paper, lin|lin, mse | mse_map | KL: " + "; ".join(
            f"{FAMILY_NAMES[f]} {v['mse']:g} | {v['mse_map']:g} | {v['kl']:g}" for f, v in comp.items()) + "."))

    blocks.append(Block("h2", "4. β trades reconstruction for sparsity"))
    trend = patches.get("beta_trend", {})
    paper_sweep = trend.get("paper", {})
    rows = []
    for beta in sorted({float(r["beta"]) for r in patches["beta_sweep"]}):
        runs = [r for r in patches["beta_sweep"] if float(r["beta"]) == beta]
        ps = paper_sweep.get(str(beta)) or paper_sweep.get(f"{beta:g}") or {}
        rows.append((f"{beta:g}", _mean_sd([r["mse_map"] for r in runs]), _fmt(ps.get("mse_map"), 1),
                     _mean_sd([r["lifetime_sparsity"] for r in runs]), _fmt(ps.get("lifetime_sparsity"), 3),
                     _mean_sd([r["nelbo"] for r in runs]), str(len(runs))))
    blocks.append(Block("table", items=("β", "mse_map (ours, mean ± sd)", "paper", "lifetime sparsity (ours)",
                                        "paper", "NELBO (ours)", "seeds"), rows=tuple(rows)))
    for key in ("mse_map", "lifetime_sparsity"):
        t = trend.get(key)
        if t:
            per_seed = ", ".join(f"{_fmt(v, 2)}" for v in t["rho_per_seed"].values())
            blocks.append(Block("p", f"Trend of {key} with β: Spearman ρ of the mean curve "
                                f"{_fmt(t['rho_mean_curve'], 3)}, per seed {per_seed}; bootstrap 95% CI over seeds "
                                f"{_fmt(t['ci95'][0], 3)} … "
                                f"{_fmt(t['ci95'][1], 3)} ({t['n_boot']} resamples)."))
    if "beta_sweep" in figures:
        blocks.append(Block("img", figures["beta_sweep"], items=("β sweep with the paper's values",)))

    blocks.append(Block("h2", "5. Sparse coding and the amortisation gap"))
    rows = [(n, _fmt(r["metrics"]["mse"], 1), _fmt(r["metrics"]["lifetime_sparsity"], 3),
             _fmt(r.get("paper", {}).get("mse"), 1), _fmt(r.get("paper", {}).get("lifetime_sparsity"), 3))
            for n, r in patches.get("sparse_coding", {}).items()]
    blocks.append(Block("table", items=("model", "mse (ours)", "lifetime sparsity (ours)", "paper mse",
                                        "paper sparsity"), rows=tuple(rows)))
    if "tradeoff" in figures:
        blocks.append(Block("img", figures["tradeoff"], items=("mse_map vs lifetime sparsity",)))
    amort = patches.get("amortisation")
    if amort:
        m = amort.get("matched") or {}
        blocks.append(Block("p", (
            f"**LCA on the P-VAE's dictionary.** Non-negative LCA on {amort['model']}'s own dictionary (λ = "
            + ", ".join(f"{p['lam']:.3g}" for p in amort["points"])
            + f"; paper: λ 0.001 → 1 gave mse_map 39.4 → 83.4 at lifetime 0.697 → 0.954). At the P-VAE's lifetime "
            f"sparsity {_fmt(amort['pvae']['lifetime_sparsity'], 3)}, LCA reaches mse {_fmt(m.get('mse'), 1)} "
            f"({m.get('how', '—')}) against the encoder's mse_map {_fmt(amort['pvae']['mse_map'], 1)}: a gap of "
            f"{_fmt(amort.get('gap'), 1)}.")))
    return blocks


def _classification_blocks(classification: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    blocks = [Block("h2", "6. Few-label classification (kNN, k = 5)")]
    blocks.append(Block("p", "The paper's protocol: features (P-VAE log λ, G/L-VAE μ, C-VAE logits) of the test "
                        "set; the first 5000 test images are the labelled pool, the last 5000 the evaluation set; "
                        "N labels drawn from the pool without replacement (the whole pool once for N = 5000); "
                        "mean ± 95% CI over the draws. Every model sees the same draws. MNIST is not available "
                        "offline, so Fashion-MNIST stands in for it; digits uses a seeded half/half split of all "
                        "1797 images. Paper (MNIST, K = 10): P-VAE .815 / .919 / .946, G-VAE .673 / .813 / .891."))
    for dataset, study in classification.items():
        budgets = [str(b) for b in study["budgets"]]
        blocks.append(Block("h3", f"{dataset} ({study['arch']}, {study['epochs']} epochs, pool {study['n_pool']}, "
                            f"evaluation {study['n_eval']} images)"))
        rows = []
        for k in sorted(study["runs"], key=int):
            for family, run in study["runs"][k].items():
                cells = [f"{run['knn'][b]['mean']:.3f} ± {run['knn'][b]['ci95']:.3f}" if b in run["knn"] else "—"
                         for b in budgets]
                rows.append((k, FAMILY_NAMES[family], *cells, _fmt(run["metrics"]["nelbo"], 1)))
        blocks.append(Block("table", items=("K", "model", *[f"N={b}" for b in budgets], "val NELBO"),
                            rows=tuple(rows)))
        if f"knn/{dataset}" in figures:
            blocks.append(Block("img", figures[f"knn/{dataset}"], items=(f"kNN accuracy, {dataset}",)))
    blocks.append(Block("h2", "7. Shattering dimensionality"))
    blocks.append(Block("p", "The paper's protocol: for each of the 126 distinct 5-vs-5 splits of the ten classes "
                        "(the paper's 252 count each twice; a split and its complement give the same accuracy), a "
                        "logistic regression (scikit-learn defaults) fitted on training-set features and scored on "
                        "test-set features; the score is the mean accuracy. The P-VAE is compared with each family "
                        "**paired** over the same splits: mean difference, t-interval, Wilcoxon signed-rank p. Paper "
                        "(MNIST, P / C / L / G): K=10 .797 / .795 / .751 / .758; K=50 .935 / .899 / .770 / .743; "
                        "K=100 .949 / .884 / .767 / .763."))
    rows = []
    for dataset, study in classification.items():
        for k in sorted(study["runs"], key=int):
            for family, run in study["runs"][k].items():
                s = run["shattering"]
                pair = (study.get("paired", {}).get(k, {}).get(family) or {}).get("shattering")
                diff = (f"{pair['mean_difference']:+.3f} ({_fmt(pair['ci95_low'])}…{_fmt(pair['ci95_high'])}), "
                        f"p {_fmt(pair['wilcoxon_p'], 2)}") if pair else "—"
                rows.append((dataset, k, FAMILY_NAMES[family], f"{s['mean']:.3f} ± {s['ci95']:.3f}",
                             diff, str(s["n_splits"]), str(s["n_train"]), str(s.get("not_converged", 0))))
    blocks.append(Block("table", items=("dataset", "K", "model", "shattering", "P-VAE minus this (paired)", "splits",
                                        "train samples", "fits not converged"), rows=tuple(rows)))
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
