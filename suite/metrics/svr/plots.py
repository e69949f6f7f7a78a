"""Figures of the ``svr`` metric, drawn from its JSON values (what ``results.jsonl`` stores).

* ``adjacency`` -- one heatmap per layer pair, rows the next map's spectral neurons, columns the
  previous map's, index 1 at the top left (paper Fig. 3 and 7); colour = coefficient ``a[n, m]``
  (mean-pooled when the stored heatmap is), a box over the top-left ``d_out x d_in`` block (the
  internal dimensions, Sec. 3.2) and a red line on each colour bar at the significance threshold.
* ``graph`` -- the SVR graph (paper Fig. 2): layers on x, singular values on y (log scale when they
  spread over more than ``LOG_SPREAD``), nodes coloured by node intensity (grey -> blue for FC maps,
  grey -> red for conv maps; the last map, which has no next map, in grey), the strongest stored
  significant edges as segments shaded by coefficient (darker = stronger, strongest drawn on top).

Only the object API (:class:`matplotlib.figure.Figure`) is used: no pyplot state, works headless.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LOG_SPREAD", "MAX_DRAWN_EDGES", "edge_segments", "internal_dims_box", "svr_figures"]

LOG_SPREAD = 100.0  # log-scale the graph's y axis when max / min positive singular value exceeds this
MAX_DRAWN_EDGES = 3000  # edges drawn in the graph, over all pairs (split evenly, strongest of each pair)

_GREY = "#c8c8c8"
_NODE_END = {"fc": "#1f4fbf", "conv": "#c0392b"}


def internal_dims_box(d_out: int, d_in: int) -> tuple[float, float, float, float]:
    """``(x0, y0, width, height)`` of the internal-dimension block in heatmap data coordinates.

    The heatmap is drawn with ``extent`` so that spectral neuron ``k`` (1-based) of either map sits
    at the integer coordinate ``k`` whatever the pooling; the block covers columns ``1..d_in``
    (previous map) and rows ``1..d_out`` (next map), i.e. from ``0.5`` to ``d + 0.5``.
    """
    return 0.5, 0.5, float(d_in), float(d_out)


Segment = tuple[tuple[float, float], tuple[float, float]]


def edge_segments(values: dict[str, Any], max_drawn: int = MAX_DRAWN_EDGES) -> tuple[list[Segment], list[float]]:
    """Segments ``((i, s_prev[m]), (i + 1, s_next[n]))`` and coefficients of the edges to draw.

    Each pair gets an even share of ``max_drawn`` (its strongest stored edges; ``edges`` are stored
    strongest first); the result is sorted by increasing coefficient so the strongest are drawn last.
    """
    sv = values.get("singular_values") or []
    edges = values.get("edges") or []
    if not edges or max_drawn <= 0:
        return [], []
    share = max(1, max_drawn // len(edges))
    rows = []
    for i, pair_edges in enumerate(edges):
        if i + 1 >= len(sv):
            break
        prev, nxt = sv[i], sv[i + 1]
        for n, m, a in pair_edges[:share]:
            rows.append((float(a), ((float(i), float(prev[int(m) - 1])), (float(i + 1), float(nxt[int(n) - 1])))))
    rows.sort(key=lambda r: r[0])
    return [r[1] for r in rows], [r[0] for r in rows]


def _cmap(kind: str):
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(f"svr_{kind}", [_GREY, _NODE_END.get(kind, "#444444")])


def _adjacency_figure(values: dict[str, Any]):
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    heatmaps = values["heatmaps"]
    pairs = values.get("pairs") or []
    k = len(heatmaps)
    ncols = k if k <= 4 else math.ceil(math.sqrt(k))  # one row for a few pairs, else about square
    nrows = math.ceil(k / ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.7 * nrows + 1.0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    any_pooled = False
    for idx, hm in enumerate(heatmaps):
        ax = axes[idx // ncols][idx % ncols]
        pr = pairs[idx] if idx < len(pairs) else {}
        n, m = hm["shape"]
        grid = hm["values"]
        im = ax.imshow(
            grid, cmap="viridis", origin="upper", interpolation="nearest", aspect="auto",
            extent=(0.5, m + 0.5, n + 0.5, 0.5), vmin=None if hm.get("pooled") else 0.0,
        )  # pooled means crowd around 1/c: their own range, else the structure is invisible
        title = f"{pr.get('prev', idx)} → {pr.get('next', idx + 1)}"
        if hm.get("pooled"):
            any_pooled = True
            title += f"\nmean-pooled {n}x{m} → {len(grid)}x{len(grid[0]) if grid else 0}"
        dims = pr.get("internal_dims")
        if dims:
            x0, y0, w, h = internal_dims_box(int(dims[0]), int(dims[1]))
            box = Rectangle((x0, y0), w, h, fill=False, edgecolor="white", lw=1.2, ls="--", label="internal_dims")
            ax.add_patch(box)
            title += f"\n(d_out, d_in) = ({dims[0]}, {dims[1]})"
        ax.set_title(title, fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        if idx // ncols == nrows - 1 or idx + ncols >= k:
            ax.set_xlabel("m (previous map)", fontsize=6)
        if idx % ncols == 0:
            ax.set_ylabel("n (next map)", fontsize=6)
        cb = fig.colorbar(im, cax=ax.inset_axes([1.03, 0.0, 0.05, 1.0]))  # cheaper than ax=ax (no regridding)
        cb.locator = MaxNLocator(nbins=3)
        thr = pr.get("threshold")
        if isinstance(thr, (int, float)):
            cb.ax.axhline(thr, color="red", lw=0.8)
    for idx in range(k, nrows * ncols):
        axes[idx // ncols][idx % ncols].set_axis_off()
    sup = "SVR adjacency a[n, m] per layer pair; dashed box: internal dims (d_out, d_in); red on colour bar: threshold"
    if any_pooled:
        sup += "\ncolour = mean of the coefficients in each pooled cell (where marked mean-pooled)"
    height = fig.get_figheight()
    fig.suptitle(sup, fontsize=8, y=1 - 0.08 / height, va="top")
    top = 1 - (0.2 + 0.16 * (sup.count("\n") + 1) + 0.45) / height  # room for the suptitle and 3-line titles
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.5 / height, top=top, hspace=0.8, wspace=0.55)
    return fig


def _graph_figure(values: dict[str, Any], max_drawn: int = MAX_DRAWN_EDGES):
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure

    sv: list[list[float]] = values["singular_values"]
    layers = values.get("layers") or [{"name": str(i), "kind": "fc"} for i in range(len(sv))]
    intensity = values.get("node_intensity") or []
    positive = [x for s in sv for x in s if x > 0]
    lo, hi = (min(positive), max(positive)) if positive else (1.0, 1.0)
    log = hi / lo > LOG_SPREAD
    floor = lo * 0.5

    def y(v: float) -> float:
        return max(v, floor) if log else v

    fig = Figure(figsize=(max(6.4, 0.55 * len(sv) + 2.5), 4.4))
    ax = fig.subplots()
    segs, coefs = edge_segments(values, max_drawn)
    if segs:
        segs = [((x0, y(y0)), (x1, y(y1))) for (x0, y0), (x1, y1) in segs]
        greys = LinearSegmentedColormap.from_list("svr_edges", ["#d9d9d9", "#000000"])
        norm = Normalize(vmin=min(coefs), vmax=max(coefs) if max(coefs) > min(coefs) else min(coefs) + 1e-12)
        lc = LineCollection(segs, cmap=greys, norm=norm, linewidths=0.6 if len(segs) <= 500 else 0.35, zorder=1)
        lc.set_array(coefs)
        ax.add_collection(lc)
        cb = fig.colorbar(lc, ax=ax, fraction=0.04, pad=0.02)
        cb.set_label("edge coefficient a", fontsize=7)
    for i, s in enumerate(sv):
        if not s:
            continue
        size = max(2.0, min(24.0, 1500.0 / len(s)))  # per map: 4096-neuron FC maps next to 64-neuron convs
        xs = [i] * len(s)
        ys = [y(v) for v in s]
        kind = layers[i].get("kind", "fc") if i < len(layers) else "fc"
        inten = intensity[i] if i < len(intensity) else None
        if inten is not None and len(inten) == len(s):
            ax.scatter(xs, ys, c=inten, cmap=_cmap(kind), vmin=0.0, vmax=1.0, s=size, edgecolors="none", zorder=2)
        else:
            ax.scatter(xs, ys, color=_GREY, s=size, edgecolors="none", zorder=2)
    if log:
        ax.set_yscale("log")
    ax.set_xlim(-0.5, len(sv) - 0.5)
    ax.set_xticks(range(len(sv)))
    names = [f"{i}: {layers[i].get('name', i)}" if i < len(layers) else str(i) for i in range(len(sv))]
    ax.set_xticklabels(names, rotation=45 if len(sv) > 6 else 0, ha="right" if len(sv) > 6 else "center", fontsize=6)
    ax.set_ylabel("singular value" + (" (log)" if log else ""), fontsize=8)
    stored = sum(len(e) for e in values.get("edges") or [])
    significant = values.get("total_significant", stored)
    p = values.get("tail_p")
    p_text = f"p = {p:.3g}" if isinstance(p, (int, float)) else "p = ?"
    drawn = f"{len(segs)} of {significant} significant edges drawn"
    if stored < significant:
        drawn += f" ({stored} stored)"
    ax.set_title(
        f"SVR graph ({p_text}): {drawn}\nnode colour = intensity (grey → blue FC, grey → red conv; last map grey)",
        fontsize=8,
    )
    return fig


def svr_figures(values: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[("adjacency", Figure), ("graph", Figure)]`` from ``svr`` values (adjacency only with heatmaps)."""
    import matplotlib

    out: list[tuple[str, Any]] = []
    if not values.get("singular_values"):
        return out
    # small tick labels from the start (tick_params afterwards rebuilds every tick: slow with 38 axes)
    with matplotlib.rc_context({"xtick.labelsize": 6, "ytick.labelsize": 6}):
        if values.get("heatmaps"):
            out.append(("adjacency", _adjacency_figure(values)))
        out.append(("graph", _graph_figure(values)))
    return out
