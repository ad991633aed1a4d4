"""Leaderboard figures, rendered with matplotlib's Agg canvas to PNG bytes (no pyplot, no global state).

Every figure is a pure function of its data and writes deterministic bytes: no ``Software`` / date metadata,
fixed DPI and font sizes, inputs iterated in sorted order by the caller.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sclzoo.vocab import OBJECTIVES

__all__ = ["png_bytes", "distributions_figure", "rank_heatmap", "maps_gallery", "OBJECTIVE_COLORS",
           "explanation_grid", "explanation_grid_size", "ground_truth_grid"]

OBJECTIVE_COLORS = {name: o.colour for name, o in OBJECTIVES.items()}
_FALLBACK = ["#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
DPI = 96


def _color(objective: str) -> str:
    if objective in OBJECTIVE_COLORS:
        return OBJECTIVE_COLORS[objective]
    return _FALLBACK[sum(map(ord, objective)) % len(_FALLBACK)]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any) -> bytes:
    """PNG of a figure with no metadata (so the same figure always gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def distributions_figure(series: Sequence[dict[str, Any]], metrics: Sequence[dict[str, Any]],
                         methods: Sequence[str]) -> bytes:
    """Per-sample score distributions: one panel per metric, boxes per method, one colour per objective.

    Args:
        series: One entry per model: ``{"label", "objective", "values": {(method, metric): (N,) float}}``.
        metrics: ``{"name", "higher_is_better"}`` per panel, in display order.
        methods: x-axis order.

    Returns:
        PNG bytes.
    """
    from matplotlib.patches import Patch

    ncols = min(4, max(1, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols)
    fig = _figure(3.2 * ncols, 2.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    k = max(1, len(series))
    width = 0.8 / k
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for si, s in enumerate(series):
            data, pos = [], []
            for mi, method in enumerate(methods):
                v = np.asarray(s["values"].get((method, metric["name"]), []), dtype=np.float64)
                v = v[~np.isnan(v)]
                if len(v):
                    data.append(v)
                    pos.append(mi - 0.4 + width * (si + 0.5))
            if not data:
                continue
            bp = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, manage_ticks=False,
                            flierprops={"markersize": 2, "alpha": 0.5})
            for box in bp["boxes"]:
                box.set_facecolor(_color(s["objective"]))
                box.set_alpha(0.75)
            for med in bp["medians"]:
                med.set_color("black")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(f"{metric['name']} {'↑' if metric['higher_is_better'] else '↓'}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    handles = [Patch(facecolor=_color(s["objective"]), alpha=0.75, label=s["label"]) for s in series]
    if handles:
        fig.legend(handles=handles, loc="upper center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return png_bytes(fig)


def rank_heatmap(row_labels: Sequence[str], col_labels: Sequence[str], ranks: np.ndarray) -> bytes:
    """Rank heat-map: rows = leaderboard rows (model · method), columns = metrics, cell = rank (1 = best).

    Args:
        row_labels: (R,) row names.
        col_labels: (M,) metric names (with their direction arrow).
        ranks: (R, M) ranks, NaN where a row has no score for the metric.

    Returns:
        PNG bytes.
    """
    r, m = ranks.shape
    fig = _figure(max(4.0, 1.0 + 0.75 * m + 2.2), max(2.0, 0.8 + 0.32 * r))
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(ranks)
    top = max(1.0, float(np.nanmax(ranks)) if np.isfinite(ranks).any() else 1.0)
    im = ax.imshow(masked, cmap="viridis_r", vmin=1, vmax=top, aspect="auto")
    for i in range(r):
        for j in range(m):
            v = ranks[i, j]
            ax.text(j, i, "–" if not np.isfinite(v) else f"{int(v)}", ha="center", va="center", fontsize=7,
                    color="black" if np.isfinite(v) and v <= (1 + top) / 2 else "white")
    ax.set_xticks(range(m))
    ax.set_xticklabels(col_labels, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(r))
    ax.set_yticklabels(row_labels, fontsize=7)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("rank (1 = best)", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    fig.tight_layout()
    return png_bytes(fig)


#: One colour per metric family in the reliability figure (families beyond these get fallback colours).
FAMILY_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def reliability_figure(metrics: dict[str, dict[str, Any]], threshold: float) -> bytes:
    """Resilience vs reactivity per metric (the meta-evaluation of a zoo, docs/protocol.md#meta-evaluation).

    Args:
        metrics: ``{metric: {"family", "resilience", "reactivity", "mc", "models": [{"resilience",
            "reactivity"}, ...]}}`` in display order (:func:`sclzoo.evaluator.reliability.zoo_reliability`).
        threshold: The MC above which a metric counts as reliable; MC = (resilience + reactivity) / 2, so the
            line resilience + reactivity = 2 × threshold separates reliable metrics (above it) from the rest.

    Returns:
        PNG bytes: one large marker per metric at its mean over the zoo's models (labelled), small markers for
        each model, colours by family.
    """
    from sclzoo.vocab import FAMILIES

    families = sorted({v["family"] for v in metrics.values()},
                      key=lambda f: (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f))
    colour = {f: FAMILY_COLORS[i % len(FAMILY_COLORS)] for i, f in enumerate(families)}
    fig = _figure(5.6, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.linspace(0.0, 1.0, 2)
    ax.plot(xs, 2 * threshold - xs, ls="--", lw=0.8, color="#888")
    ax.text(0.99, 2 * threshold - 0.99 + 0.02, f"MC = {threshold:g}", ha="right", va="bottom", fontsize=6,
            color="#666")
    labels: dict[tuple[float, float], list[str]] = {}  # metrics at (nearly) the same place share one label
    for name, v in metrics.items():
        c = colour[v["family"]]
        pts = [(m["resilience"], m["reactivity"]) for m in v.get("models", [])
               if m["resilience"] is not None and m["reactivity"] is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color=c, alpha=0.35, linewidths=0)
        if v["resilience"] is None or v["reactivity"] is None:
            continue
        ax.scatter([v["resilience"]], [v["reactivity"]], s=46, color=c, edgecolors="black", linewidths=0.5,
                   zorder=3)
        mc = "–" if v["mc"] is None else f"{v['mc']:.2f}"
        spot = (round(v["resilience"] / 0.03) * 0.03, round(v["reactivity"] / 0.03) * 0.03)
        labels.setdefault(spot, []).append(f"{name} ({mc})")
    # Labels in a column beside the points, top to bottom, pushed apart so that none overlaps the next; a thin line
    # joins each to its point. Points at the right edge get their labels on their left, inside the axes.
    gap = 0.045
    last = {True: math.inf, False: math.inf}
    for (x, y), names in sorted(labels.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        right = x > 0.8
        ty = min(y, last[right] - gap * len(names))
        last[right] = ty
        ax.annotate("\n".join(names), (x, y), xytext=(x - 0.05 if right else x + 0.05, ty), textcoords="data",
                    fontsize=6.5, ha="right" if right else "left", va="center",
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "#999", "shrinkA": 0, "shrinkB": 3})
    ax.set_xlim(-0.02, 1.03)
    ax.set_ylim(-0.04, 1.05)
    ax.set_xlabel("resilience: mean of IAC_NR and IEC_NR (minor weight noise)", fontsize=7)
    ax.set_ylabel("reactivity: mean of IAC_AR and IEC_AR (disruptive noise)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.grid(True, lw=0.3, alpha=0.5)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colour[f], label=f, markersize=5) for f in families]
    ax.legend(handles=handles, fontsize=6, loc="lower left", frameon=False)
    fig.tight_layout()
    return png_bytes(fig)

def maps_gallery(images: np.ndarray | None, rows: Sequence[tuple[Any, ...]], sample_ids: Sequence[int],
                 labels: Sequence[Any] | None = None) -> bytes:
    """Example attribution maps: a row of input images, then one row per (model, method), and a colour bar.

    Args:
        images: (K, C, H, W) inputs in [0, 1], or None.
        rows: ``(label, maps)`` or ``(label, maps, predictions)``: maps (K, H, W) signed pixel maps, predictions
            (K,) the model's predicted class per image (shown in the cell, red when it differs from the label).
            Each map is shown on its own symmetric scale, since map magnitudes are not comparable across methods:
            the colour bar runs from −max|map| (blue) through 0 (white) to +max|map| (red), and each cell prints
            its max|map|.
        sample_ids: (K,) dataset indices, used as column titles.
        labels: (K,) true class per image (shown in the column title), or None.

    Returns:
        PNG bytes.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    k = len(sample_ids)
    n_rows = len(rows) + (1 if images is not None else 0)
    bar_in = 0.75  # right margin: the colour bar and its label
    fig = _figure(1.9 + 1.0 * k + bar_in, 0.4 + 1.0 * n_rows)
    axes = fig.subplots(n_rows, k, squeeze=False)
    cmap = colormaps["bwr"]

    def title(j: int) -> str:
        return f"#{int(sample_ids[j])}" + (f" · label {labels[j]}" if labels is not None and j < len(labels) else "")

    r0 = 0
    if images is not None:
        for j in range(k):
            img = np.asarray(images[j], dtype=np.float32)
            if img.shape[0] == 1:
                axes[0, j].imshow(img[0], cmap="gray", vmin=0, vmax=1)
            else:
                axes[0, j].imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            axes[0, j].set_title(title(j), fontsize=7)
        axes[0, 0].set_ylabel("input", fontsize=7, rotation=0, ha="right", va="center")
        r0 = 1
    for i, row in enumerate(rows):
        label, maps = row[0], row[1]
        preds = row[2] if len(row) > 2 else None
        for j in range(k):
            ax = axes[r0 + i, j]
            if j < len(maps):
                m = np.asarray(maps[j], dtype=np.float32)
                v = float(np.abs(m).max()) or 1.0
                ax.imshow(m, cmap=cmap, vmin=-v, vmax=v)
                note = f"±{float(np.abs(m).max()):.2g}"
                wrong = False
                if preds is not None and j < len(preds):
                    wrong = labels is not None and j < len(labels) and str(preds[j]) != str(labels[j])
                    note = f"pred {preds[j]} · {note}"
                ax.text(0.03, 0.03, note, transform=ax.transAxes, fontsize=5.5, ha="left", va="bottom",
                        color="#b00000" if wrong else "#222222", fontweight="bold" if wrong else "normal",
                        bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
            if r0 == 0 and i == 0:
                ax.set_title(title(j), fontsize=7)
        axes[r0 + i, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    width, height = fig.get_figwidth(), fig.get_figheight()
    right = 1 - bar_in / width
    fig.subplots_adjust(left=1.8 / width, right=right, top=1 - 0.3 / height, bottom=0.1 / height,
                        wspace=0.05, hspace=0.08)
    if rows:
        span = min(1.0, max(0.5, 2.0 / height))  # at least 2 in. of bar, at most the plot's height
        cax = fig.add_axes((right + 0.12 / width, 0.1 / height + (1 - span) / 2 * (1 - 0.4 / height),
                            0.12 / width, span * (1 - 0.4 / height)))
        cb = fig.colorbar(ScalarMappable(Normalize(-1, 1), cmap), cax=cax, ticks=[-1, 0, 1])
        cb.ax.set_yticklabels(["−max", "0", "+max"], fontsize=6)
        cb.set_label("attribution", fontsize=6, labelpad=1)
    return png_bytes(fig)


# ------------------------------------------------------------------------------------------ sclzoo explain
GRID_CELL_IN = 1.5  # inches per cell of the explanation grid
GRID_TOP_IN = 0.7  # title band (figure title + two-line column titles)


def explanation_grid_size(n_images: int, n_methods: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`explanation_grid`'s PNG: 1 + 2·methods columns, one row per image."""
    cols = 1 + 2 * n_methods
    return round(cols * GRID_CELL_IN * DPI), round((n_images * GRID_CELL_IN + GRID_TOP_IN) * DPI)


def explanation_grid(images: np.ndarray, maps: dict[str, np.ndarray], row_labels: Sequence[str],
                     title: str = "") -> bytes:
    """Attribution maps of a few images, one row per image.

    Columns: the image (titled with its id, true label and prediction), then for each method its signed pixel
    map (diverging colormap, limits ±max|m| of that map, so zero is white) and |m| overlaid on the image.

    Args:
        images: (K, C, H, W) inputs in [0, 1].
        maps: ``{method: (K, H, W)}`` signed pixel maps m = Σ_c a_c.
        row_labels: (K,) caption of each image.
        title: Figure title (model, target).

    Returns:
        PNG bytes of exactly :func:`explanation_grid_size` pixels.
    """
    from matplotlib import colormaps

    k, methods = images.shape[0], list(maps)
    width, height = explanation_grid_size(k, len(methods))
    fig = _figure(width / DPI, height / DPI)
    axes = fig.subplots(k, 1 + 2 * len(methods), squeeze=False)
    heat = colormaps["inferno"]
    for r in range(k):
        img = np.clip(np.asarray(images[r], dtype=np.float32), 0, 1)
        gray = img.mean(0)
        shown = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        axes[r, 0].imshow(shown, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
        axes[r, 0].set_title(row_labels[r], fontsize=7)
        for j, method in enumerate(methods):
            m = np.asarray(maps[method][r], dtype=np.float32)
            lim = float(np.abs(m).max()) or 1.0  # an all-zero map stays white instead of a singular norm
            ax = axes[r, 1 + 2 * j]
            ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"{method}\n±{lim:.2g}" if r == 0 else f"±{lim:.2g}", fontsize=7)
            rgba = heat(np.abs(m) / lim)
            rgba[..., 3] = 0.85 * np.abs(m) / lim  # transparent where the map is ~0: the image shows through
            ax = axes[r, 2 + 2 * j]
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
            ax.imshow(rgba)
            if r == 0:
                ax.set_title(f"|{method}| on image", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.06 / fig.get_figheight(), va="top")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - GRID_TOP_IN / fig.get_figheight(),
                        wspace=0.06, hspace=0.35)
    return png_bytes(fig)


# ---------------------------------------------------------------------------------------- sclzoo show-data
def ground_truth_grid(images: np.ndarray, masks: dict[str, np.ndarray], captions: Sequence[str], title: str = "",
                      per_row: int = 4) -> bytes:
    """Images of a dataset beside their ground-truth masks, ``per_row`` samples a row.

    Each sample gets two panels: the image, and the image again with the masks drawn over it, each kind in its
    own colour (the first kind as an outline, the others filled translucently), named in a legend.

    Args:
        images: (K, C, H, W) in [0, 1].
        masks: ``{kind: (K, H, W) bool}``, the dataset's default kind first; may be empty.
        captions: (K,) title of each sample.
        title: Figure title.
        per_row: Samples per row.

    Returns:
        PNG bytes.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k = images.shape[0]
    rows = max(1, math.ceil(k / per_row))
    cell, top = 1.3, 0.55 if title else 0.3
    fig = _figure(2 * per_row * cell, rows * cell + top)
    axes = fig.subplots(rows, 2 * per_row, squeeze=False)
    colours = ["#00e5ff", "#ff8c00", "#7cfc00", "#ff1493"]
    kinds = list(masks)
    for i in range(rows * per_row):
        r, c = divmod(i, per_row)
        ax_img, ax_mask = axes[r, 2 * c], axes[r, 2 * c + 1]
        for ax in (ax_img, ax_mask):
            ax.set_xticks([])
            ax.set_yticks([])
        if i >= k:
            ax_img.set_axis_off()
            ax_mask.set_axis_off()
            continue
        img = np.clip(np.asarray(images[i], dtype=np.float32), 0, 1)
        shown = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        cmap = "gray" if img.shape[0] == 1 else None
        ax_img.imshow(shown, cmap=cmap, vmin=0, vmax=1)
        ax_img.set_title(captions[i], fontsize=7)
        ax_mask.imshow(shown, cmap=cmap, vmin=0, vmax=1)
        for j, kind in enumerate(kinds):
            m = np.asarray(masks[kind][i], dtype=bool)
            colour = colours[j % len(colours)]
            if j == 0:  # padded, so a mask that touches the border is closed along it
                h, w = m.shape
                ax_mask.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), np.pad(m, 1).astype(np.float32),
                                levels=[0.5], colors=[colour], linewidths=1.0)
                ax_mask.set_xlim(-0.5, w - 0.5)
                ax_mask.set_ylim(h - 0.5, -0.5)
            else:
                ax_mask.imshow(np.ma.masked_where(~m, m.astype(np.float32)), cmap=ListedColormap([colour]),
                               alpha=0.55, vmin=0, vmax=1)
        if i == 0 and kinds:
            ax_mask.set_title("masks", fontsize=7)
    if kinds:
        fig.legend(handles=[Patch(facecolor="none" if j == 0 else colours[j % len(colours)],
                                  edgecolor=colours[j % len(colours)], label=kind) for j, kind in enumerate(kinds)],
                   loc="upper right", fontsize=7, ncol=len(kinds), frameon=False)
    if title:
        fig.suptitle(title, fontsize=9, x=0.01, ha="left", y=1 - 0.08 / fig.get_figheight(), va="top")
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - top / fig.get_figheight(),
                        wspace=0.04, hspace=0.3)
    return png_bytes(fig)
