"""Charts drawn on the server as SVG, each with a table of its numbers (no JavaScript, no CDN).

A chart is a ``<figure>``: the SVG (``role="img"``, named by its caption) and, below it, the same
numbers as a ``<table>`` a screen reader reads and a user copies. Colours are CSS classes
(``series-0`` ...), so the page's stylesheet gives them for the light and the dark theme.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 36
SERIES_COLOURS = 8  # series-0 .. series-7 in the stylesheet; more series reuse them

_ids = itertools.count()

Format = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """One named series of a chart: a value per category (bars) or per x (lines)."""

    name: str
    values: Sequence[float | None]
    # What to show for each value instead of the formatted number (a cost "price unknown").
    texts: Sequence[str] | None = None

    def text(self, index: int, fmt: Format) -> str:
        return self.texts[index] if self.texts is not None else fmt(self.values[index] or 0.0)


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.2f}"


def dollars(value: float) -> str:
    """US dollars, with the decimals a small figure needs (a request costs fractions of a cent)."""
    if abs(value) >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:,.4f}" if abs(value) >= 0.01 else f"${value:,.6f}"


def _nice_top(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if value <= step * magnitude * (1 + 1e-9))


def _y_axis(top: float, fmt: Format) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    out = []
    for n in range(5):
        value = top * n / 4
        y = TOP + plot_h - plot_h * n / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(value))}</text>')
    return out


def _figure(title: str, svg_body: list[str], table: str, chart_id: str, kind: str) -> str:
    return (
        f'<figure class="chart" data-chart="{escape(kind)}">'
        f'<figcaption id="{chart_id}">{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(svg_body)}</svg>'
        f'<details><summary>Numbers</summary>{table}</details></figure>'
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> str:
    """An HTML table of already formatted cells (escaped here)."""
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join((f'<th scope="row">{escape(c)}</th>' if i == 0 else f"<td>{escape(c)}</td>")
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _legend(names: Sequence[str], y: float) -> list[str]:
    out, x = [], float(LEFT)
    for n, name in enumerate(names):
        out.append(f'<rect class="series-{n % SERIES_COLOURS}" x="{x:.1f}" y="{y - 8:.1f}" width="10" height="10"/>'
                   f'<text class="legend" x="{x + 14:.1f}" y="{y + 1:.1f}">{escape(name)}</text>')
        x += 24 + 7 * min(len(name), 28)
    return out


def stacked_bars(title: str, categories: Sequence[str], series: Sequence[Series], fmt: Format = number,
                 *, kind: str = "stacked-bars", total_column: bool = True) -> str:
    """Bars per category, each stacked from ``series`` (a series-N class per series); the table
    adds a total per category unless ``total_column`` is False (a total that would hide unknowns)."""
    chart_id = f"chart-{next(_ids)}"
    totals = [sum(s.values[i] or 0.0 for s in series) for i in range(len(categories))]
    top = _nice_top(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM - 14
    slot = plot_w / max(len(categories), 1)
    body = _y_axis(top, fmt)
    label_every = max(1, len(categories) // 10)
    for i, category in enumerate(categories):
        x, base = LEFT + i * slot + slot * 0.15, float(TOP + plot_h + 14)
        for n, s in enumerate(series):
            value = s.values[i] or 0.0
            if value <= 0:
                continue
            h = (plot_h + 14) * value / top
            base -= h
            body.append(f'<rect class="series-{n % SERIES_COLOURS}" data-series="{escape(s.name)}" x="{x:.1f}" '
                        f'y="{base:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
                        f"<title>{escape(category)}, {escape(s.name)}: {escape(s.text(i, fmt))}</title></rect>")
        if i % label_every == 0:
            body.append(f'<text class="axis" x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                        f'text-anchor="middle">{escape(category)}</text>')
    body += _legend([s.name for s in series], HEIGHT - 4)
    rows = [[category, *(s.text(i, fmt) for s in series), *([fmt(totals[i])] if total_column else [])]
            for i, category in enumerate(categories)]
    headers = ["", *(s.name for s in series), *(["total"] if total_column else [])]
    return _figure(title, body, table(headers, rows), chart_id, kind)


def hbars(title: str, labels: Sequence[str], values: Sequence[float], fmt: Format = number,
          texts: Sequence[str] | None = None, *, kind: str = "hbars") -> str:
    """Horizontal bars, one per label (top DAGs, models...); ``texts`` replace ``fmt(value)`` as
    the figure shown (a cost with "price unknown")."""
    texts = texts if texts is not None else [fmt(value) for value in values]
    chart_id = f"chart-{next(_ids)}"
    top = max(values, default=0.0) or 1.0
    row_h = 22
    height = TOP + row_h * max(len(labels), 1) + 8
    label_w = 220
    plot_w = WIDTH - label_w - RIGHT - 230
    body = []
    for n, (label, value) in enumerate(zip(labels, values)):
        y = TOP + n * row_h
        w = plot_w * value / top
        short = label if len(label) <= 30 else label[:29] + "…"
        body.append(f'<text class="axis" x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(short)}</text>'
                    f'<rect class="series-{n % SERIES_COLOURS}" data-series="{escape(label)}" x="{label_w}" '
                    f'y="{y + 3}" width="{w:.1f}" height="{row_h - 6}"><title>{escape(label)}: '
                    f"{escape(texts[n])}</title></rect>"
                    f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 15}">{escape(texts[n])}</text>')
    svg = (f'<figure class="chart" data-chart="{escape(kind)}"><figcaption id="{chart_id}">{escape(title)}'
           f'</figcaption><svg viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{chart_id}" '
           f'xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')
    numbers = table(["", "value"], [[label, texts[n]] for n, label in enumerate(labels)])
    return svg + f"<details><summary>Numbers</summary>{numbers}</details></figure>"


@dataclass(frozen=True)
class Marker:
    """A point event on a line chart's x axis (a 429, a pause)."""

    x: float
    kind: str
    label: str


def lines(title: str, xs: Sequence[float], series: Sequence[Series], fmt: Format = number,
          markers: Sequence[Marker] = (), *, x_label: Callable[[float], str] = number,
          kind: str = "lines", dashed: Sequence[str] = ()) -> str:
    """Lines over ``xs`` (a gap where a value is None), with ``markers`` drawn as ticks on the x axis."""
    chart_id = f"chart-{next(_ids)}"
    values = [v for s in series for v in s.values if v is not None]
    top = _nice_top(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM - 14
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = (x1 - x0) or 1.0

    def px(x: float) -> float:
        return LEFT + plot_w * (x - x0) / span

    def py(y: float) -> float:
        return TOP + plot_h - plot_h * y / top

    body = _y_axis(top, fmt)
    for n, s in enumerate(series):
        points: list[str] = []
        paths: list[list[str]] = []
        for x, v in zip(xs, s.values):
            if v is None:
                if points:
                    paths.append(points)
                points = []
            else:
                points.append(f"{px(x):.1f},{py(v):.1f}")
        if points:
            paths.append(points)
        dash = ' stroke-dasharray="6 4"' if s.name in dashed else ""
        for path in paths:
            if len(path) == 1:
                cx, cy = path[0].split(",")
                body.append(f'<circle class="line-{n % SERIES_COLOURS}" data-series="{escape(s.name)}" '
                            f'cx="{cx}" cy="{cy}" r="3"/>')
            else:
                body.append(f'<polyline class="line-{n % SERIES_COLOURS}" data-series="{escape(s.name)}" '
                            f'points="{" ".join(path)}"{dash}/>')
    for marker in markers:
        x = px(marker.x)
        body.append(f'<line class="marker marker-{escape(marker.kind)}" data-marker="{escape(marker.kind)}" '
                    f'x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}"><title>{escape(marker.label)}'
                    "</title></line>")
    for n in range(5):
        x = x0 + span * n / 4
        body.append(f'<text class="axis" x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 16}" '
                    f'text-anchor="middle">{escape(x_label(x))}</text>')
    legend = [s.name for s in series] + sorted({f"{m.kind} (marked)" for m in markers})
    body += _legend(legend[: len(series)], HEIGHT - 4)
    headers = ["time", *(s.name for s in series)]
    rows = [[x_label(x), *("" if s.values[i] is None else fmt(s.values[i] or 0.0) for s in series)]
            for i, x in enumerate(xs)]
    extra = ""
    if markers:
        extra = table(["time", "event"], [[x_label(m.x), m.label] for m in markers], caption="Marked events")
    return _figure(title, body, table(headers, rows) + extra, chart_id, kind)
