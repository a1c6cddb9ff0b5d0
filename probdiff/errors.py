"""The one exception type that reaches the user as a one-line message."""

from __future__ import annotations


class ProbdiffError(Exception):
    """Bad input or an impossible option.

    The command line prints ``probdiff: error: <message>`` and exits with status 2; no
    traceback is shown and no run folder is touched. Raise it at the boundary (data loading,
    option parsing, shape checks) with a message that names the bad value.
    """
