"""The README's Python API example runs as written, on the session's exported encoder."""

from __future__ import annotations

import contextlib
import io
import re

from conftest import REPO

from deploy import codes
from deploy.index import HammingIndex

PLACEHOLDERS = ("artifacts/rimone", "../shared/data/rimone_dl", "index/rimone")


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(art, tmp_path):
    code = readme_example()
    for placeholder in PLACEHOLDERS:
        assert f'"{placeholder}' in code, placeholder
    code = (
        code.replace('"artifacts/rimone', f'"{art["dir"]}')
        .replace('"../shared/data/rimone_dl"', f'"{art["data"]}"')
        .replace('"index/rimone"', f'"{tmp_path / "idx"}"')
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})

    # Expected: the exact top-5 of the first train image among the 14 train images by
    # the Keras bits (ties by index order), with the labels of labels.csv.
    train = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "train"]
    query = codes.pack_bits(art["bits"][train[0]][None])
    db = codes.pack_bits([art["bits"][i] for i in train])
    reference = HammingIndex(bits=64, fingerprint="keras")
    reference.batch_add(db, train)
    expected = reference.lookup(query[0], k=5)
    rows = (art["data"] / "labels.csv").read_text().splitlines()
    header = rows[0].split(",")
    labels = {
        r.split(",")[header.index("id")]: r.split(",")[header.index("label")] for r in rows[1:]
    }
    assert out.getvalue().splitlines() == [
        f"{h.rank} {h.id} {h.distance} {labels[h.id]}" for h in expected
    ]
    assert expected[0].id == train[0] and expected[0].distance == 0
    saved = HammingIndex.load(tmp_path / "idx")
    assert saved.ids == [i for i in train if i != expected[-1].id]  # the last hit removed
