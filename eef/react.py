"""ReAct turn format: ``Thought: ...\\nAction: ...`` — rendering and robust parsing.

Parsing rule (applied to any model output):

1. The action is the text after the **first** ``Action:`` marker (case-insensitive, at a line
   start or after whitespace), up to the end of that line.  Later ``Action:`` lines are ignored
   (a model that emits several actions gets its first one executed).
2. Without an ``Action:`` marker, the action is the first non-empty line that does not start
   with ``Thought:``; if every line is a thought, the action is empty.
3. The thought is the text after ``Thought:`` up to the action line (or the whole text before
   the action line when no ``Thought:`` marker is present), whitespace-collapsed.
4. A trailing ``.``, then surrounding quotes / backticks, then a trailing ``.`` again are
   stripped from the action.
   An empty action is returned as ``""``; envs treat it as an invalid action (never an error).
"""

from __future__ import annotations

import re

_ACTION = re.compile(r"(?:^|\s)action\s*:\s*(.*)", re.IGNORECASE)
_THOUGHT = re.compile(r"^\s*thought\s*:\s*", re.IGNORECASE)


def render_turn(thought: str, action: str) -> str:
    """The agent's turn text for one step."""
    thought = (thought or "").strip()
    return f"Thought: {thought}\nAction: {action}" if thought else f"Action: {action}"


def _clean_action(a: str) -> str:
    a = a.strip()
    if a.endswith(".") and not a.endswith("..."):
        a = a[:-1].rstrip()
    while len(a) >= 2 and a[0] == a[-1] and a[0] in "'\"`":
        a = a[1:-1].strip()
    a = a.strip("`").strip()
    if a.endswith(".") and not a.endswith("..."):
        a = a[:-1].rstrip()
    return a


def parse_turn(text: str) -> tuple[str, str]:
    """``(thought, action)`` from a model's output, by the module's documented rule."""
    text = text or ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _ACTION.search(line)
        if m:
            before = "\n".join(lines[:i] + [line[: m.start()]])
            thought = _THOUGHT.sub("", before.strip(), count=1)
            return " ".join(thought.split()), _clean_action(m.group(1))
    for i, line in enumerate(lines):
        if line.strip() and not _THOUGHT.match(line):
            thought = _THOUGHT.sub("", "\n".join(lines[:i]).strip(), count=1)
            return " ".join(thought.split()), _clean_action(line)
    return " ".join(_THOUGHT.sub("", text.strip(), count=1).split()), ""
