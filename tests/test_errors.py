"""deploy.errors: the one line every command line prints on failure."""

from deploy.errors import error_line, one_line


class Summarised(ValueError):
    summary = "labels.csv row 2: duplicate id 'a' (and 3 more; see --debug)"


def test_messages_become_one_line():
    assert one_line("a:\n  b\n\n  c  ") == "a: b c"
    assert error_line(ValueError("labels.csv line 3:\n  empty id")) == "labels.csv line 3: empty id"
    assert error_line(FileNotFoundError("x.png not found")) == "x.png not found"


def test_summary_wins_and_unexpected_types_name_themselves():
    assert error_line(Summarised("every\nproblem\nlisted")) == Summarised.summary
    assert error_line(KeyError("x")) == "KeyError: 'x' (rerun with --debug)"
    assert error_line(RuntimeError("")) == "RuntimeError"
