"""The one exception type that reaches the user as a one-line message."""

from __future__ import annotations


class ProbdiffError(Exception):
    """Bad input or an impossible option.

    The command line prints ``probdiff: error: <message>`` and exits with status 2; no
    traceback is shown and no run folder is touched. Raise it at the boundary (data loading,
    option parsing, shape checks) with a message that names the bad value.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type name)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def user_code_error(
    program: str, what: str, error: BaseException, last_site: tuple[str, tuple] | None
) -> ProbdiffError:
    """One line for an exception raised while a user's program ran: the program, the phase,
    the last sample site it reached (with its shape) and the first lines of the message."""
    text = str(error).split("Trace Shapes:")[0]  # Pyro appends a table of shapes
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = " ".join(lines[:2]) if lines else ""
    if len(reason) > 300:
        reason = reason[:297] + "..."
    where = (
        "before its first sample site"
        if last_site is None
        else f"after site {last_site[0]!r} of shape {last_site[1]}"
    )
    return ProbdiffError(
        f"{program} failed during {what}, {where}: {type(error).__name__}: {reason}"
    )
