"""Line charts as inline SVG, drawn on the server: no JavaScript charting library to ship."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["line_chart"]

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    unit: str,
    chart_id: str,
    width: int = 560,
    height: int = 180,
) -> str:
    """An SVG chart of ``series`` (name -> [(t, value)]), x = time. The latest value of each series
    is in a ``data-last`` attribute (``data-series`` names it) so tests and scripts can read it."""
    pad_l, pad_r, pad_t, pad_b = 48, 110, 22, 22
    pts = [p for s in series.values() for p in s]
    out = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{pad_l}" y="14" class="chart-title">{escape(title)}</text>',
    ]
    if not pts:
        out.append(f'<text x="{pad_l}" y="{height // 2}" class="chart-empty">no data yet</text></svg>')
        return "".join(out)
    t0 = min(t for t, _ in pts)
    t1 = max(t for t, _ in pts)
    vmax = max(max(v for _, v in pts), 1.0)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t: float) -> float:
        return pad_l + (plot_w * (t - t0) / (t1 - t0) if t1 > t0 else plot_w)

    def y(v: float) -> float:
        return pad_t + plot_h - plot_h * v / vmax

    out.append(
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" class="axis"/>'
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" class="axis"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" class="tick" text-anchor="end">{_fmt(vmax)}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" class="tick" text-anchor="end">0</text>'
        f'<text x="{pad_l}" y="{height - 4}" class="tick">-{t1 - t0:.0f} s</text>'
        f'<text x="{pad_l + plot_w}" y="{height - 4}" class="tick" text-anchor="end">now ({escape(unit)})</text>'
    )
    for i, (name, s) in enumerate(series.items()):
        if not s:
            continue
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s)
        last = s[-1][1]
        out.append(
            f'<polyline class="series" data-series="{escape(name)}" data-last="{_fmt(last)}" '
            f'fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>'
            f'<text x="{pad_l + plot_w + 6}" y="{pad_t + 12 + 14 * i}" class="legend" fill="{color}">'
            f"{escape(name)} {_fmt(last)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"
