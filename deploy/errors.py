"""The one-line error contract every command line of the project follows.

On failure a command line prints one line, ``error: <message>``, on stderr and exits 1;
the traceback shows only with ``--debug``. :func:`error_line` makes that message, so the
training, evaluation, export, explanation, experiment and device command lines word their
errors alike. Standard library only: the device imports it without TensorFlow.
"""

from __future__ import annotations


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
    if not isinstance(err, ValueError | OSError | RuntimeError):
        message = f"{type(err).__name__}: {message} (rerun with --debug)"
    return message or type(err).__name__
