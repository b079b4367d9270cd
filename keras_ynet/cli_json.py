"""``--json`` for the training-side command lines: one JSON document on stdout.

The project's convention (shared with ``python -m deploy`` and ``python -m export``):
with ``--json`` stdout carries exactly one JSON document, the command's result, and
every human line (progress, tables, Keras' epoch bars) goes to stderr. Training code
prints its progress with plain ``print``; rather than thread a log function through
every layer, the command's work runs with stdout redirected to stderr, and the result
is printed once the work is done.

Standard library only: the commands import it before parsing, and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

JSON_HELP = "print the result as one JSON document on stdout (progress goes to stderr)"


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Declares ``--json`` on a command's own parser (it is not a run setting)."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def run_with_result(work, as_json: bool, debug: bool, interrupted: str = "interrupted") -> int:
    """Runs ``work()`` under :func:`deploy.errors.run_command` and prints its result.

    Args:
        work: a callable returning ``(status, document)``: the exit status and the
            command's result as a JSON-serialisable dict.
        as_json: ``--json``: stdout is the document only; what ``work`` prints goes to
            stderr. Without it, ``work``'s own lines are the output and the document
            is not printed.
        debug: ``--debug`` (tracebacks).
        interrupted: what to say on Ctrl-C.

    Returns:
        The exit status.
    """
    from deploy.errors import run_command

    def body() -> int:
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            status, document = work()
        if as_json:
            print(json.dumps(document, indent=2), flush=True)
        return status

    return run_command(body, debug, interrupted)
