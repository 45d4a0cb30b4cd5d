"""Splitting shell input into statements and meta-commands: a statement ends at a ';' outside
strings, comments and parentheses; a meta-command (a line starting with '.') is one line."""

from __future__ import annotations

def split(text: str) -> tuple[list[str], str]:
    """Complete statements and meta-commands in ``text``, and the unfinished rest.

    A line starting with '.' (outside a statement) is a meta-command; a statement ends at a ';'
    outside quotes and comments.
    """
    done: list[str] = []
    current = ""
    code = False  # does the current statement hold anything but whitespace and comments?
    i = 0
    quote: str | None = None
    while i < len(text):
        ch = text[i]
        if quote is None and not code and ch == ".":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            done.append(text[i:end].strip())
            i = end + 1
            current = ""
            continue
        if quote is None and (text.startswith("--", i) or text.startswith("/*", i)):
            end = text.find("\n", i) if text.startswith("--", i) else text.find("*/", i + 2)
            end = len(text) if end < 0 else (end if text.startswith("--", i) else end + 2)
            current += text[i:end]
            i = end
            continue
        if quote is None and ch in ("'", '"'):
            quote = ch
        elif quote == ch:
            quote = None
        if quote is None and ch == ";":
            if code:
                done.append(current.strip())
            current, code = "", False
        else:
            current += ch
            code = code or not ch.isspace()
        i += 1
    if not code:
        current = ""
    return done, current
