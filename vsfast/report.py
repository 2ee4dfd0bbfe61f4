"""A self-contained report page: sections of paragraphs, tables and figures, written as one HTML
file (figures embedded as data URIs) that a browser opens with no server."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section", "write_html"]


@dataclass
class Section:
    """A part of the report page: a heading, paragraphs, a table and figures (PNG names)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    summary: dict = field(default_factory=dict)  # the section's numbers, for a summary JSON


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
"""


def write_html(path: str | Path, title: str, sections: list[Section], *, intro: str = "") -> Path:
    """Write one self-contained HTML page; figures named in the sections are read from the
    page's folder and embedded as data URIs."""
    path = Path(path)
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.rows:
            columns = list(dict.fromkeys(k for row in section.rows for k in row))
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
            for row in section.rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c, '')))}</td>" for c in columns)
                             + "</tr>")
            parts.append("</table>")
        for name, caption in section.figures:
            data = base64.b64encode((path.parent / name).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _cell(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
