"""The one-line error contract every command line of the project follows.

On failure a command line prints one line, ``error: <message>``, on stderr and exits 1;
the traceback shows only with ``--debug``. :func:`error_line` makes that message, so the
training, evaluation, export, explanation, experiment and device command lines word their
errors alike. Standard library only: the device imports it without TensorFlow.
"""

from __future__ import annotations


def printable(text) -> str:
    """``str(text)`` with every non-printable character written as a Python escape.

    Ids, labels and file names come from files anyone can write; printed raw, an escape
    sequence in one could rewrite the terminal (colours, cursor moves, a fake prompt) and
    a line break could forge an output line. ``"a\x1b[2Jb"`` prints as ``a\x1b[2Jb``.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: str) -> str:
    """``text`` on one line: its non-blank lines stripped and joined by single spaces."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def error_line(err: BaseException) -> str:
    """The one-line message a command line prints as ``error: ...`` for ``err``.

    An exception with a string ``summary`` attribute (a
    :class:`keras_ynet.dataset.DatasetError`, which lists every problem in its message)
    gives that summary; any other message is joined onto one line. Errors of other types
    than ``ValueError``, ``OSError`` and ``RuntimeError`` (ours, which name the file at
    fault) also get their type name and a hint to rerun with ``--debug``. An empty
    message gives the type name.

    Example:
        >>> error_line(ValueError("labels.csv line 3:\\n  empty id"))
        'labels.csv line 3: empty id'
        >>> error_line(KeyError("x"))
        "KeyError: 'x' (rerun with --debug)"
    """
    summary = getattr(err, "summary", None)
    message = summary if isinstance(summary, str) else one_line(str(err))
    message = printable(message)  # names from files stay on one line and inert
    if not isinstance(err, ValueError | OSError | RuntimeError):
        message = f"{type(err).__name__}: {message} (rerun with --debug)"
    return message or type(err).__name__


def run_command(work, debug: bool, interrupted: str = "interrupted") -> int:
    """Runs a command line's ``work()`` under the one-line error contract.

    Every command line of the project ends through here, so they agree on what a
    failure looks like: an exception prints ``error: <error_line>`` on stderr and gives
    exit status 1; Ctrl-C prints ``error: <interrupted>`` and gives 130; ``debug``
    re-raises instead (the traceback). TensorFlow's C++ log noise is silenced unless
    ``debug`` (set before TensorFlow is imported; the device never imports it).

    Args:
        work: a callable taking no arguments; its return value (None = 0) is the exit
            status on success.
        debug: show tracebacks instead of the one-line errors.
        interrupted: what to say on Ctrl-C (e.g. "interrupted; nothing was written").

    Returns:
        The exit status.
    """
    import os
    import sys

    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        status = work()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; --debug shows the traceback
        if debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)
