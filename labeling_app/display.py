"""How an item's text is shown: prompt and completion as one passage, exactly as stored.

The labeller judges the text the policy wrote, which is the plain concatenation ``prompt +
completion`` (:func:`db.shown_text`). Shown as one passage, with the model's part between
``⟦`` and ``⟧``:

- a completion that continues the prompt's last word (``"Great" + "est"``) reads ``Great⟦est⟧``,
  one that starts with a space (``"This movie" + " was"``) reads ``This movie⟦␣was⟧``;
- every space that is not a single space between two visible characters is shown as ``␣`` (so
  leading and trailing spaces, double spaces and spaces at a line's ends can be seen), a tab as
  ``⇥``, a line break as ``↵`` followed by the break itself;
- every other invisible or look-alike character (control and format characters such as a
  zero-width space or a right-to-left override, non-breaking and other Unicode spaces, line and
  paragraph separators) is shown as its code, ``⟨U+200B⟩``, and so is any of the marker characters
  themselves when the text contains it.

Nothing is lost: :func:`parse_passage` gives back the exact prompt and completion (a test checks
this on random texts). The passage is plain text for ``st.text``, never Markdown or HTML; it starts
and ends with a visible character, so ``st.text``'s strip and dedent leave it unchanged.
"""

from __future__ import annotations

import re
import unicodedata

OPEN, CLOSE = "⟦", "⟧"  # around the model's part
SPACE, TAB, NEWLINE = "␣", "⇥", "↵"
_ESC_OPEN, _ESC_CLOSE = "⟨", "⟩"  # ⟨U+XXXX⟩: a character shown by its code
MARKERS = frozenset(OPEN + CLOSE + SPACE + TAB + NEWLINE + _ESC_OPEN + _ESC_CLOSE)
# Joiners that shape emoji and Indic/Persian scripts: invisible by design, shown as they are.
_KEEP = frozenset("\u200c\u200d")

LEGEND = f"the model's part is between {OPEN} and {CLOSE}; {SPACE} is a space, {NEWLINE} a line break, {TAB} a tab"


def _code(ch: str) -> str:
    return f"{_ESC_OPEN}U+{ord(ch):04X}{_ESC_CLOSE}"


def _hidden(ch: str) -> bool:
    """A character that cannot be seen, or could be taken for another one (a space that is not a space)."""
    if ch in _KEEP:
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp") or (cat == "Zs" and ch != " ")


def _visible_char(ch: str) -> bool:
    return not ch.isspace() and not _hidden(ch)


def visible(text: str) -> str:
    """``text`` with its whitespace and invisible characters made visible (see the module docstring)."""
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch == " ":
            single = 0 < i < n - 1 and _visible_char(text[i - 1]) and _visible_char(text[i + 1])
            out.append(" " if single else SPACE)
        elif ch == "\n":
            out.append(NEWLINE + "\n")
        elif ch == "\t":
            out.append(TAB)
        elif ch in MARKERS or _hidden(ch):
            out.append(_code(ch))
        else:
            out.append(ch)
    return "".join(out)


def passage(prompt: str, completion: str) -> str:
    """The one passage shown: the prompt, then the model's part between the markers."""
    return f"{visible(prompt)}{OPEN}{visible(completion)}{CLOSE}"


_TOKEN = re.compile(f"{_ESC_OPEN}U\\+([0-9A-F]{{4,6}}){_ESC_CLOSE}|{NEWLINE}\n|[{SPACE}{TAB}]|[{OPEN}{CLOSE}]")


def unvisible(shown: str) -> str:
    """The exact text :func:`visible` was given."""

    def back(m: re.Match) -> str:
        tok = m.group(0)
        if m.group(1):
            return chr(int(m.group(1), 16))
        return {SPACE: " ", TAB: "\t", NEWLINE + "\n": "\n"}.get(tok, tok)

    return _TOKEN.sub(back, shown)


def parse_passage(shown: str) -> tuple[str, str]:
    """(prompt, completion) exactly as stored, from a :func:`passage` (the markers appear once each)."""
    head, rest = shown.split(OPEN, 1)
    body, tail = rest.rsplit(CLOSE, 1)
    if tail:
        raise ValueError("text after the end of the model's part")
    return unvisible(head), unvisible(body)
