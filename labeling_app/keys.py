"""Which key presses count as a judgement: a fresh press on an item the labeller has had time to see.

Streamlit's button shortcuts fire on every ``keydown``, auto-repeat included, and the server never
sees ``KeyboardEvent.repeat``. What it does see is when each press arrives, so :class:`KeyGate`
tells a held key from a deliberate press by timing alone:

- **too soon**: the item has been on screen for less than ``min_dwell`` seconds;
- **held**: the same key arrived less than ``min_dwell`` after its previous press (auto-repeat
  sends one every 30-90 ms);
- **retract**: a press accepted as a judgement, that came within ``repeat_delay`` of the previous
  press of its key and is followed within ``repeat_gap`` by the same key, was itself the first
  auto-repeat of a held key (the OS waits 250-660 ms before it repeats, then repeats every
  30-90 ms; nobody taps one key that fast); the caller takes that action back. A first tap after a
  pause is never taken back, so fast taps give one action and ignore the rest.

With these, holding a key for any length of time makes exactly one judgement, the first press.
``min_dwell = 0`` turns the gate off (tests, scripted labellers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Reason = Literal["held", "stale", "too_soon"]


@dataclass(frozen=True)
class Verdict:
    """What to do with one press: act on it (``accept``) or say why not (``reason``), and whether the
    previous action of this key must be taken back (``retract``)."""

    accept: bool
    reason: Reason | None = None
    retract: bool = False


@dataclass
class KeyGate:
    min_dwell: float  # seconds an item must be on screen, and between two presses of one key
    repeat_gap: float = 0.12  # presses of one key closer than this are auto-repeat
    repeat_delay: float = 0.7  # the longest wait before a held key starts repeating
    _last_press: dict[str, float] = field(default_factory=dict)
    _last_accepted: dict[str, tuple[float, bool]] = field(default_factory=dict)  # key -> (when, could be a repeat)

    def press(self, key: str, *, now: float, shown_at: float | None, current: bool = True) -> Verdict:
        """Judge one press of ``key`` at ``now`` (monotonic seconds) on an item drawn at ``shown_at``;
        ``current`` is False when the press was for an item no longer on screen."""
        previous = self._last_press.get(key)
        self._last_press[key] = now
        gap = math.inf if previous is None else now - previous
        accepted = self._last_accepted.pop(key, None)
        retract = accepted is not None and accepted == (previous, True) and gap < min(self.repeat_gap, self.min_dwell)
        if gap < self.min_dwell:
            return Verdict(False, "held", retract)
        if not current:
            return Verdict(False, "stale", retract)
        if shown_at is not None and now - shown_at < self.min_dwell:
            return Verdict(False, "too_soon", retract)
        self._last_accepted[key] = (now, gap < self.repeat_delay)
        return Verdict(True, None, retract)


# The Compare page's keys: what each press means for the pair on screen.
PAIR_SHORTCUTS = {"left": "1", "right": "2", "tie": "0", "skip": "S", "undo": "U"}


def pair_choice(action: str, left: str) -> str:
    """The stored choice (``a``, ``b``, ``tie`` or ``skip``) of a press on the Compare page, given the
    completion (``"a"`` or ``"b"``) shown on the left: "left" is that one, "right" the other."""
    if action == "left":
        return left
    if action == "right":
        return "b" if left == "a" else "a"
    if action in ("tie", "skip"):
        return action
    raise ValueError(f"not a comparison action: {action!r}")


def pair_action(choice: str, left: str) -> str:
    """The inverse of :func:`pair_choice`: which button a stored choice was (for messages after undo)."""
    if choice in ("tie", "skip"):
        return choice
    return "left" if choice == left else "right"
