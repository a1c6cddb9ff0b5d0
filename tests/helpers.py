"""Helpers shared by the test files (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

from probdiff.cli import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``probdiff ARGV`` in-process: (exit code, stdout, stderr) of this call alone."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
