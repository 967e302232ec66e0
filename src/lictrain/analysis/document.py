"""The report's document: blocks (headings, text, lists, tables, figures) rendered as Markdown or HTML."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt

__all__ = ["Document", "markdown_table", "html_table", "inline_html"]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    if df.empty:
        return "_(none)_\n"
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    lines = [header, rule]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def html_table(df: pd.DataFrame) -> str:
    """An HTML table (cells escaped)."""
    if df.empty:
        return "<p><em>(none)</em></p>\n"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def inline_html(text: str) -> str:
    """The report's inline Markdown (``**bold**``, `` `code` ``, links) as HTML. CommonMark by
    markdown-it-py with raw HTML off: run names and values from run folders are escaped, never markup."""
    return MarkdownIt("commonmark", {"html": False}).renderInline(text)


class Document:
    """Collects blocks, renders Markdown (``fmt="md"``) or HTML."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"{'#' * level} {text}\n" if self.fmt == "md" else f"<h{level}>{inline_html(text)}</h{level}>\n")

    def text(self, text: str) -> None:
        self.parts.append(f"{text}\n" if self.fmt == "md" else f"<p>{inline_html(text)}</p>\n")

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        if self.fmt == "md":
            self.parts.append("".join(f"- {i}\n" for i in items))
        else:
            self.parts.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>\n")

    def table(self, df: pd.DataFrame) -> None:
        self.parts.append(markdown_table(df) if self.fmt == "md" else html_table(df))

    def figure(self, path: Path, root: Path, caption: str) -> None:
        rel = path.relative_to(root).as_posix()
        if self.fmt == "md":
            self.parts.append(f"![{caption}]({rel})\n")
        else:
            self.parts.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                              f"<figcaption>{html.escape(caption)}</figcaption></figure>\n")

    def render(self, title: str) -> str:
        body = "\n".join(self.parts)
        if self.fmt == "md":
            return f"# {title}\n\n{body}"
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:right}th{background:#f3f3f3}img{max-width:100%}figcaption{color:#555}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}</body></html>\n")
