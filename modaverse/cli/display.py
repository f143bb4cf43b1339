"""Human-readable summaries of turns for the terminal (``generate`` and ``chat``)."""

from __future__ import annotations

from modaverse.pipeline.turn import Turn


def printable(text: str) -> str:
    """Model text made safe for a terminal: control characters (escape sequences) are shown as '?'."""
    return "".join(c if c in "\n\t" or (ord(c) >= 32 and ord(c) != 127) else "?" for c in text)


def invocation_lines(turn: Turn) -> list[str]:
    lines = []
    for n, inv in enumerate(turn.invocations, 1):
        params = inv.params.given()
        extra = "  " + " ".join(f"{k}={v}" for k, v in params.items()) if params else ""
        lines.append(f"  {n}. {inv.capability}: {printable(inv.prompt)!r}{extra}")
    lines += [f"  -> {p}" for p in turn.outputs]
    lines += [f"  ! {e}" for e in turn.errors]
    return lines


def summary(turn: Turn) -> str:
    lines = [f"reply: {printable(turn.text)}" if turn.text else "reply: (none)"]
    if turn.fallback:
        lines.append(f"note: {turn.fallback}")
    if turn.invocations:
        lines.append("invocations:")
        lines += invocation_lines(turn)
    return "\n".join(lines)
