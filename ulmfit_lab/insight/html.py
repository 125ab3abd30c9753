"""Self-contained HTML pages for the insight commands: inline CSS, plots embedded as base64 PNG, every text
escaped. One file to open or mail, no server and no JavaScript."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import pandas as pd

from ..fileio import atomic_path

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; background: #fff; }
h1 { border-bottom: 3px solid #2b6cb0; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; vertical-align: top; text-align: left; }
th { background: #edf2f7; }
.warn { background: #fff5e6; border-left: 5px solid #dd6b20; padding: .5em .8em; margin: .6em 0; }
.ok { background: #f0fff4; border-left: 5px solid #38a169; padding: .5em .8em; margin: .6em 0; }
.info { background: #ebf8ff; border-left: 5px solid #3182ce; padding: .5em .8em; margin: .6em 0; }
.todo { font-weight: 600; }
.text { max-width: 620px; white-space: pre-wrap; word-break: break-word; }
.attr span { padding: 1px 2px; border-radius: 3px; line-height: 1.9; }
.small { color: #666; font-size: .85em; }
img { max-width: 100%; }
"""


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def png_tag(path: str | Path, alt: str) -> str:
    """An <img> holding the PNG itself (data URI): the page stays one file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(df: pd.DataFrame, text_columns: Sequence[str] = ("text",), max_chars: int = 400,
          floatfmt: str = "{:.3f}") -> str:
    """An HTML table; long texts are cut to `max_chars` (with their length), every cell escaped."""
    def cell(col: str, v: object) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        s = str(v)
        if col in text_columns:
            short = s if len(s) <= max_chars else s[:max_chars] + f"… ({len(s)} chars)"
            return f'<div class="text">{esc(short)}</div>'
        return esc(s)

    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(c, v)}</td>" for c, v in zip(df.columns, row)) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{rows}</table>"


def page(title: str, parts: Iterable[str], subtitle: str = "") -> str:
    body = "\n".join(parts)
    sub = f'<p class="small">{esc(subtitle)}</p>' if subtitle else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}\n{body}\n</body></html>\n")


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically (to a temporary name, then renamed)."""
    from ..plots import _plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _plt().close(fig)
    return path


def atomic_png(path: str | Path) -> AbstractContextManager[Path]:
    """A temporary `.png` path beside `path` (plotting code picks the format by suffix), renamed over `path`
    only when the block succeeds."""
    return atomic_path(path, suffix=".png")


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """`df` as CSV (no index), written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path
