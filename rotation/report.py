"""Audit rows as people, CI and dashboards read them: table, JSON, CSV, Markdown, HTML.

Every format is built from :class:`rotation.audit.AuditRow` only: names, fingerprints,
ages and times. None of them can print a secret value because none is ever given one.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any, TextIO

from rich.markup import escape
from rich.table import Table

from rotation.audit import AuditRow
from rotation.status import Status

FIELDS = (
    "name",
    "provider",
    "kind",
    "environment",
    "status",
    "fingerprint",
    "age_days",
    "max_age_days",
    "warn_age_days",
    "secondary_fingerprint",
    "secondary_retire_at",
    "last_rotation",
    "pending_fingerprint",
    "note",
)

STATUS_COLOURS = {
    Status.OK: "#2e7d32",
    Status.DUE: "#f9a825",
    Status.OVERDUE: "#c62828",
    Status.ROTATING: "#1565c0",
    Status.READ_ONLY: "#757575",
    Status.ERROR: "#6a1b9a",
}
_RICH = {
    Status.OK: "green",
    Status.DUE: "yellow",
    Status.OVERDUE: "bold red",
    Status.ROTATING: "cyan",
    Status.READ_ONLY: "dim",
    Status.ERROR: "magenta",
}


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        files("rotation").joinpath("schemas/audit.schema.json").read_text(encoding="utf-8")
    )
    return loaded


def _days(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds() / 86400, 2)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def row_json(row: AuditRow) -> dict[str, Any]:
    age = _days(row.age)
    return {
        "name": row.name,
        "provider": row.provider,
        "kind": row.kind,
        "environment": row.environment,
        "status": str(row.status),
        "fingerprint": row.fingerprint,
        "age_days": None if age is None else max(0.0, age),
        "max_age_days": _days(row.max_age),
        "warn_age_days": _days(row.warn_age),
        "secondary_fingerprint": row.secondary_fingerprint,
        "secondary_retire_at": _iso(row.secondary_retire_at),
        "last_rotation": _iso(row.last_rotation),
        "pending_fingerprint": row.pending_fingerprint,
        "note": row.note,
    }


def summary(rows: Sequence[AuditRow]) -> dict[str, int]:
    counts = Counter(str(row.status) for row in rows)
    return {str(status): counts.get(str(status), 0) for status in Status}


def _collected(write: Callable[[TextIO], None]) -> str:
    buffer = io.StringIO()
    write(buffer)
    return buffer.getvalue()


def write_json(rows: Sequence[AuditRow], now: datetime, out: TextIO) -> None:
    """The JSON document, written row by row (a fleet never becomes one string)."""
    out.write('{\n  "generated_at": ' + json.dumps(_iso(now)) + ",\n")
    out.write('  "summary": ' + json.dumps(summary(rows)) + ',\n  "keys": [')
    for index, row in enumerate(rows):
        out.write(("," if index else "") + "\n    " + json.dumps(row_json(row)))
    out.write("\n  ]\n}\n" if rows else "]\n}\n")


def to_json(rows: Sequence[AuditRow], now: datetime) -> str:
    return _collected(lambda out: write_json(rows, now, out))


def write_csv(rows: Sequence[AuditRow], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row_json(row).items()})


def to_csv(rows: Sequence[AuditRow]) -> str:
    return _collected(lambda out: write_csv(rows, out))


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_markdown(rows: Sequence[AuditRow]) -> str:
    return _collected(lambda out: write_markdown(rows, out))


def write_markdown(rows: Sequence[AuditRow], out: TextIO) -> None:
    columns = (
        "status",
        "name",
        "provider",
        "environment",
        "fingerprint",
        "age_days",
        "max_age_days",
        "secondary_fingerprint",
        "secondary_retire_at",
        "last_rotation",
        "note",
    )
    out.write("| " + " | ".join(columns) + " |\n")
    out.write("|" + "|".join("---" for _ in columns) + "|\n")
    for row in rows:
        data = row_json(row)
        cells = [_text(data[c]).replace("|", "\\|") for c in columns]
        out.write("| " + " | ".join(cells) + " |\n")


def _short(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _day(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d")


def write_plain_table(rows: Sequence[AuditRow], out: TextIO) -> None:
    """The table as aligned plain text, row by row: what a pipe or a file gets (rich's
    table would hold and measure every cell first)."""
    columns: list[tuple[str, Callable[[AuditRow, dict[str, Any]], str], bool]] = [
        ("status", lambda r, d: str(r.status), False),
        ("name", lambda r, d: r.name, False),
        ("provider", lambda r, d: r.provider, False),
        ("env", lambda r, d: _text(r.environment), True),
        ("fingerprint", lambda r, d: _text(r.fingerprint), False),
        ("age", lambda r, d: "-" if d["age_days"] is None else f"{d['age_days']:.1f}d", False),
        ("max", lambda r, d: "-" if d["max_age_days"] is None else f"{d['max_age_days']:.0f}d",
         False),
        ("secondary", lambda r, d: _text(r.secondary_fingerprint), True),
        ("retires", lambda r, d: _short(r.secondary_retire_at), True),
        ("last rotation", lambda r, d: _day(r.last_rotation), True),
        ("note", lambda r, d: r.note or "-", True),
    ]  # fmt: skip
    widths = [len(name) for name, _, _ in columns]
    used = [not optional for _, _, optional in columns]
    for row in rows:
        data = row_json(row)
        for index, (_, cell, _) in enumerate(columns):
            text = cell(row, data)
            widths[index] = max(widths[index], len(text))
            used[index] = used[index] or text not in ("-", "")
    keep = [index for index, flag in enumerate(used) if flag]
    out.write("  ".join(columns[i][0].ljust(widths[i]) for i in keep).rstrip() + "\n")
    for row in rows:
        data = row_json(row)
        cells = [columns[i][1](row, data).ljust(widths[i]) for i in keep]
        out.write("  ".join(cells).rstrip() + "\n")


def to_table(rows: Sequence[AuditRow]) -> Table:
    """Worst first; columns nobody has a value in (env, secondary, notes...) are left out,
    so the common case fits a terminal."""
    columns: list[tuple[str, dict[str, Any]]] = [
        ("status", {"no_wrap": True}),
        ("name", {"overflow": "fold", "min_width": 8}),
        ("provider", {"overflow": "fold"}),
        ("env", {"overflow": "fold"}),
        ("fingerprint", {"overflow": "fold", "min_width": 10}),
        ("age", {"no_wrap": True, "justify": "right"}),
        ("max", {"no_wrap": True, "justify": "right"}),
        ("secondary", {"overflow": "fold"}),
        ("retires", {"overflow": "fold"}),
        ("last rotation", {"overflow": "fold"}),
        ("note", {"overflow": "fold"}),
    ]
    optional = {"env", "secondary", "retires", "last rotation", "note"}
    cells = []
    for row in rows:
        data = row_json(row)
        style = _RICH[row.status]
        cells.append(
            [
                f"[{style}]{row.status}[/{style}]",
                *map(
                    escape,  # data is never rich markup: "[providers.aws]" stays as written
                    (
                        row.name,
                        row.provider,
                        _text(row.environment),
                        _text(row.fingerprint),
                        "-" if data["age_days"] is None else f"{data['age_days']:.1f}d",
                        "-" if data["max_age_days"] is None else f"{data['max_age_days']:.0f}d",
                        _text(row.secondary_fingerprint),
                        _short(row.secondary_retire_at),
                        _day(row.last_rotation),
                        row.note,
                    ),
                ),
            ]
        )
    keep = [
        index
        for index, (name, _) in enumerate(columns)
        if name not in optional or any(line[index] not in ("-", "") for line in cells)
    ]
    table = Table(title="key audit (worst first)", title_justify="left")
    for index in keep:
        name, options = columns[index]
        table.add_column(name, **options)
    for line in cells:
        table.add_row(*(line[index] for index in keep))
    return table


# -- HTML: one self-contained page -------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem;
       color: #1f2328; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
.meta { color: #57606a; margin-bottom: 1.5rem; }
.pill { display: inline-block; padding: .1rem .55rem; border-radius: 1rem; color: #fff;
        font-weight: 600; font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin-top: 1.5rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d0d7de;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
svg.chart text { font: 12px system-ui, sans-serif; fill: #1f2328; }
"""


def _chart(rows: Sequence[AuditRow]) -> str:
    charted = [r for r in rows if r.age is not None and r.max_age]
    if not charted:
        return '<p class="meta">No key has a known age to chart.</p>'
    label_w, bar_w, row_h, top = 260, 560, 24, 30
    ratios = [r.age / r.max_age for r in charted]  # type: ignore[operator]
    scale_max = max(1.25, min(3.0, max(ratios) * 1.05))

    def x(ratio: float) -> float:
        return label_w + bar_w * min(ratio, scale_max) / scale_max

    height = top + row_h * len(charted) + 20
    parts = [
        f'<svg class="chart" role="img" aria-label="key age against policy" '
        f'xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 40}" height="{height}">',
        f'<text x="{label_w}" y="16">0</text>',
        f'<text x="{x(1.0) - 30:.1f}" y="16">max age</text>',
    ]
    for i, (row, ratio) in enumerate(zip(charted, ratios, strict=True)):
        y = top + i * row_h
        colour = STATUS_COLOURS[row.status]
        days = row.age.total_seconds() / 86400  # type: ignore[union-attr]
        max_days = row.max_age.total_seconds() / 86400  # type: ignore[union-attr]
        parts.append(
            f'<g class="bar" data-key="{html.escape(row.name)}" data-status="{row.status}">'
            f"<title>{html.escape(row.name)}: {days:.1f} of {max_days:.0f} days "
            f"({row.status})</title>"
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{html.escape(row.name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(1.0, x(ratio) - label_w):.1f}" '
            f'height="{row_h - 8}" rx="3" fill="{colour}"/>'
        )
        if row.warn_age is not None:
            wx = x(row.warn_age / row.max_age)  # type: ignore[operator]
            parts.append(
                f'<line x1="{wx:.1f}" x2="{wx:.1f}" y1="{y + 1}" y2="{y + row_h - 3}" '
                'stroke="#f9a825" stroke-width="2" stroke-dasharray="3 2"/>'
            )
        parts.append("</g>")
    parts.append(
        f'<line x1="{x(1.0):.1f}" x2="{x(1.0):.1f}" y1="{top - 6}" y2="{height - 14}" '
        'stroke="#c62828" stroke-width="2"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _time_cell(value: datetime | None) -> str:
    if value is None:
        return "<td>-</td>"
    return f'<td title="{html.escape(_iso(value) or "")}">{html.escape(_short(value))}</td>'


def to_html(rows: Sequence[AuditRow], now: datetime) -> str:
    return _collected(lambda out: write_html(rows, now, out))


#: the chart shows the most urgent keys; a fleet's every bar would be a wall, not a chart
CHART_ROWS = 200


def write_html(rows: Sequence[AuditRow], now: datetime, out: TextIO) -> None:
    """One self-contained page: summary, a chart of the most urgent keys, then every key
    in a table written row by row."""
    counts = summary(rows)
    pills = " ".join(
        f'<span class="pill" style="background:{STATUS_COLOURS[Status(s)]}">{s}: {n}</span>'
        for s, n in counts.items()
        if n
    )
    header = "".join(
        f"<th>{html.escape(c)}</th>"
        for c in (
            "status",
            "name",
            "provider",
            "environment",
            "fingerprint",
            "age (days)",
            "max age (days)",
            "secondary",
            "secondary retires",
            "last rotation",
            "note",
        )
    )
    charted = rows[:CHART_ROWS]
    chart_note = (
        f" The {len(charted)} most urgent of {len(rows)} keys are charted."
        if len(charted) < len(rows)
        else ""
    )
    out.write(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyvault audit</title><style>{_CSS}</style></head>
<body>
<h1>Key audit</h1>
<p class="meta">Generated {html.escape(_short(now))} UTC · {len(rows)} keys · {pills}</p>
<h2>Age against policy</h2>
<p class="meta">Each bar is a key's age as a share of its policy's max age;
the dashed mark is its warn age, the red line its max age.{chart_note}</p>
{_chart(charted)}
<table><thead><tr>{header}</tr></thead><tbody>
""")
    for row in rows:
        data = row_json(row)
        colour = STATUS_COLOURS[row.status]
        cells = [
            f'<td><span class="pill" style="background:{colour}">{row.status}</span></td>',
            f"<td>{html.escape(row.name)}</td>",
            f"<td>{html.escape(row.provider)}</td>",
            f"<td>{html.escape(_text(row.environment))}</td>",
            f"<td><code>{html.escape(_text(row.fingerprint))}</code></td>",
            f'<td class="num">{html.escape(_text(data["age_days"]))}</td>',
            f'<td class="num">{html.escape(_text(data["max_age_days"]))}</td>',
            f"<td><code>{html.escape(_text(row.secondary_fingerprint))}</code></td>",
            _time_cell(row.secondary_retire_at),
            _time_cell(row.last_rotation),
            f"<td>{html.escape(row.note)}</td>",
        ]
        out.write(f'<tr data-status="{row.status}">{"".join(cells)}</tr>\n')
    out.write("</tbody></table>\n</body></html>\n")
