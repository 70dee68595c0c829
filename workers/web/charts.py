"""The results page's charts: inline SVG drawn from plain numbers (no I/O).

Each function returns one ``<svg role="img">`` element with a ``<title>``, an ``aria-label`` that says every
figure in words, and text labels on the chart itself, so it reads without colour. Colours come from classes
styled by ``workers/web/static/results.css`` (the dashboard's Content-Security-Policy forbids inline styles);
geometry uses SVG attributes. Every element carries ``data-*`` attributes with the number it shows, for tests
and scripts.

- :func:`outcomes_bar`: the batch's ended calls by outcome, one horizontal stacked bar and a legend;
- :func:`hours_chart`: calls by the callee's local hour (0-23), the hours of the calling window shaded;
- :func:`attempts_histogram`: contacts by the number of calls they received.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping, Sequence

#: Outcomes in the order the bar stacks them: (key, label). Outcomes not listed count as ``other``.
OUTCOMES: tuple[tuple[str, str], ...] = (
    ("answered", "completed conversation"),
    ("voicemail", "voicemail"),
    ("no_answer", "no answer"),
    ("busy", "busy"),
    ("failed_dial", "failed dial"),
    ("invalid_number", "invalid number"),
    ("timeout", "timeout"),
    ("dropped", "dropped"),
    ("other", "other"),
)
OUTCOME_KEYS = tuple(key for key, _ in OUTCOMES)
#: Width of the outcome bar, SVG units.
BAR_WIDTH = 1000.0
#: Contacts with this many calls or more share the histogram's last bar.
HISTOGRAM_LAST = 10
#: What an empty chart says.
NO_CALLS = "no calls yet"

_SVG = 'xmlns="http://www.w3.org/2000/svg"'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _svg(kind: str, width: int, height: int, title: str, label: str, body: str) -> str:
    return (f'<svg {_SVG} class="chart chart-{kind}" data-chart="{kind}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{_e(label)}">'
            f"<title>{_e(title)}</title>{body}</svg>")


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.0f}%" if total else "0%"


def outcome_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` by outcome folded onto :data:`OUTCOME_KEYS` (unknown outcomes, and None, into ``other``)."""
    out = dict.fromkeys(OUTCOME_KEYS, 0)
    for key, n in counts.items():
        out[key if key in out else "other"] += int(n)
    return out


def outcomes_bar(counts: Mapping[str, int]) -> str:
    """The ended calls by outcome: a stacked bar (segment widths proportional to the counts) and a legend with
    each outcome's count and share."""
    folded = outcome_counts(counts)
    total = sum(folded.values())
    title = "Calls by outcome"
    if not total:
        body = (f'<rect class="empty-bar" x="0" y="0" width="{BAR_WIDTH:.0f}" height="36" rx="4"/>'
                f'<text class="empty-text" x="{BAR_WIDTH / 2:.0f}" y="23" text-anchor="middle">{NO_CALLS}</text>')
        return _svg("outcomes", int(BAR_WIDTH), 44, title, f"{title}: {NO_CALLS}", body)
    parts: list[str] = []
    x = 0.0
    for key, label in OUTCOMES:
        n = folded[key]
        if not n:
            continue
        width = BAR_WIDTH * n / total
        parts.append(f'<rect class="seg oc-{key}" data-outcome="{key}" data-count="{n}" x="{x:.2f}" y="0" '
                     f'width="{width:.2f}" height="36"><title>{_e(label)}: {n} ({_pct(n, total)})</title></rect>')
        if width >= 44:
            parts.append(f'<text class="seg-label" x="{x + width / 2:.2f}" y="23" text-anchor="middle">{n}</text>')
        x += width
    columns, row_h, top = 3, 26, 62
    for i, (key, label) in enumerate(OUTCOMES):
        n = folded[key]
        cx = (i % columns) * (BAR_WIDTH / columns)
        cy = top + (i // columns) * row_h
        parts.append(f'<g class="legend-item{"" if n else " zero"}" data-legend="{key}">'
                     f'<rect class="swatch oc-{key}" x="{cx:.0f}" y="{cy - 13}" width="16" height="16" rx="3"/>'
                     f'<text x="{cx + 24:.0f}" y="{cy}">{_e(label)}: <tspan class="num">{n}</tspan>'
                     f' ({_pct(n, total)})</text></g>')
    rows = -(-len(OUTCOMES) // columns)
    said = ", ".join(f"{label} {folded[key]}" for key, label in OUTCOMES if folded[key])
    return _svg("outcomes", int(BAR_WIDTH), top + (rows - 1) * row_h + 10, title,
                f"{title}, {total} calls: {said}", "".join(parts))


def _hours_text(hours: Collection[int]) -> str:
    """``{9, 10, 11, 22, 23}`` as ``09-12, 22-24`` (each run as its first hour and the hour it ends)."""
    runs: list[tuple[int, int]] = []
    for h in sorted(hours):
        if runs and h == runs[-1][1]:
            runs[-1] = (runs[-1][0], h + 1)
        else:
            runs.append((h, h + 1))
    return ", ".join(f"{a:02d}-{b:02d}" for a, b in runs)


def hours_chart(hours: Sequence[int], window: Collection[int]) -> str:
    """Calls by the callee's local hour: 24 columns (heights proportional to the counts, the tallest full height),
    the hours of ``window`` shaded behind them.

    :param hours: 24 counts, hour 0 first.
    :param window: the local hours (0-23) the calling window allows on some day.
    """
    if len(hours) != 24:
        raise ValueError(f"hours: 24 counts expected, got {len(hours)}")
    counts = [max(0, int(n)) for n in hours]
    allowed = {int(h) for h in window if 0 <= int(h) < 24}
    width, height = 720, 250
    left, right, top, bottom = 44, 8, 22, 196
    slot = (width - left - right) / 24
    plot_h = bottom - top
    peak = max(counts)
    total = sum(counts)
    parts: list[str] = []
    for h in sorted(allowed):
        parts.append(f'<rect class="window-hour" data-hour="{h}" x="{left + h * slot:.2f}" y="{top - 8}" '
                     f'width="{slot:.2f}" height="{bottom - top + 8}"/>')
    for tick in (0.5, 1.0):
        y = bottom - plot_h * tick
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        if peak:
            parts.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                         f"{_tick(peak * tick)}</text>")
    parts.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" y1="{bottom}" y2="{bottom}"/>')
    for h, n in enumerate(counts):
        x = left + h * slot
        bar_h = plot_h * n / peak if peak else 0.0
        parts.append(f'<rect class="hour-bar{" in-window" if h in allowed else " off-window"}" data-hour="{h}" '
                     f'data-count="{n}" x="{x + slot * 0.15:.2f}" y="{bottom - bar_h:.2f}" width="{slot * 0.7:.2f}" '
                     f'height="{bar_h:.2f}"><title>{h:02d}:00-{h:02d}:59: {n} calls</title></rect>')
        if n:
            parts.append(f'<text class="bar-value" x="{x + slot / 2:.2f}" y="{bottom - bar_h - 4:.2f}" '
                         f'text-anchor="middle">{n}</text>')
        parts.append(f'<text class="axis" x="{x + slot / 2:.2f}" y="{bottom + 16}" text-anchor="middle">{h:02d}</text>')
    legend_y = height - 14
    parts.append(f'<rect class="window-hour" x="{left}" y="{legend_y - 12}" width="16" height="16"/>'
                 f'<text class="legend" x="{left + 22}" y="{legend_y + 1}">calling window: '
                 f'{_e(_hours_text(allowed) if allowed else "none")} · hour of the call in the callee&#8217;s '
                 f"time zone</text>")
    if not total:
        parts.append(f'<text class="empty-text" x="{(left + width - right) / 2:.0f}" y="{(top + bottom) / 2:.0f}" '
                     f'text-anchor="middle">{NO_CALLS}</text>')
    title = "Calls by the callee's local hour"
    said = ", ".join(f"{h:02d}h {n}" for h, n in enumerate(counts) if n) or NO_CALLS
    label = f"{title}, {total} calls: {said}; calling window {_hours_text(allowed) or 'none'}"
    return _svg("hours", width, height, title, label, "".join(parts))


def _tick(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def histogram_buckets(per_contact: Mapping[int, int]) -> list[tuple[str, int]]:
    """``(label, contacts)`` per number of calls, 0 up to the largest seen, the last bucket
    ``"10+"`` holding every contact with :data:`HISTOGRAM_LAST` calls or more."""
    folded: dict[int, int] = {}
    for calls, n in per_contact.items():
        key = min(max(0, int(calls)), HISTOGRAM_LAST)
        folded[key] = folded.get(key, 0) + int(n)
    if not folded:
        return []
    top = max(folded)
    return [(f"{k}+" if k == HISTOGRAM_LAST else str(k), folded.get(k, 0)) for k in range(top + 1)]


def attempts_histogram(per_contact: Mapping[int, int]) -> str:
    """Contacts by how many calls they received: one column per count of calls (heights proportional to the
    contacts), from 0 calls up.

    :param per_contact: number of calls -> contacts with that many.
    """
    buckets = histogram_buckets(per_contact)
    width, height = 520, 250
    left, right, top, bottom = 44, 8, 22, 200
    title = "Calls per contact"
    parts: list[str] = []
    contacts = sum(n for _, n in buckets)
    if not contacts:
        parts.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" y1="{bottom}" y2="{bottom}"/>'
                     f'<text class="empty-text" x="{(left + width - right) / 2:.0f}" y="{(top + bottom) / 2:.0f}" '
                     f'text-anchor="middle">no contacts yet</text>')
        return _svg("attempts", width, height, title, f"{title}: no contacts yet", "".join(parts))
    slot = (width - left - right) / max(len(buckets), 4)
    plot_h = bottom - top
    peak = max(n for _, n in buckets)
    for tick in (0.5, 1.0):
        y = bottom - plot_h * tick
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(peak * tick)}</text>')
    parts.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" y1="{bottom}" y2="{bottom}"/>')
    for i, (label, n) in enumerate(buckets):
        x = left + i * slot
        bar_h = plot_h * n / peak
        parts.append(f'<rect class="count-bar" data-calls="{_e(label)}" data-count="{n}" x="{x + slot * 0.15:.2f}" '
                     f'y="{bottom - bar_h:.2f}" width="{slot * 0.7:.2f}" height="{bar_h:.2f}">'
                     f"<title>{_e(label)} calls: {n} contacts</title></rect>")
        if n:
            parts.append(f'<text class="bar-value" x="{x + slot / 2:.2f}" y="{bottom - bar_h - 4:.2f}" '
                         f'text-anchor="middle">{n}</text>')
        parts.append(f'<text class="axis" x="{x + slot / 2:.2f}" y="{bottom + 16}" text-anchor="middle">'
                     f"{_e(label)}</text>")
    parts.append(f'<text class="legend" x="{left}" y="{height - 12}">calls received (contacts per column)</text>')
    if all(label == "0" for label, n in buckets if n):
        parts.append(f'<text class="empty-text" x="{(left + width - right) / 2:.0f}" y="{top + 30}" '
                     f'text-anchor="middle">{NO_CALLS}</text>')
    said = ", ".join(f"{label} calls: {n}" for label, n in buckets)
    return _svg("attempts", width, height, title, f"{title}, {contacts} contacts: {said}", "".join(parts))
