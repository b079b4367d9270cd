"""deploy.write_queue: changes from many threads, one read and one save per batch, each
change accepted or refused on its own, nothing lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from deploy.index import HammingIndex, writer_lock
from deploy.write_queue import WriteQueue


@pytest.fixture
def folder(tmp_path):
    index = HammingIndex(bits=64, fingerprint="enc-1+float")
    index.add(np.eye(64, dtype=np.uint8)[0], id="first")
    index.save(tmp_path / "idx")
    return tmp_path / "idx"


def queue_of(folder, saves: list, fail: BaseException | None = None) -> WriteQueue:
    def save(index):
        saves.append(len(index))
        if fail is not None:
            raise fail  # as a full disk would, before anything is renamed into place
        index.save(folder)

    return WriteQueue(folder, lambda: HammingIndex.load(folder), save)


def adder(item_id, bit):
    def apply(index):
        if item_id in index:
            raise ValueError(f"id {item_id!r} taken")
        index.add(np.eye(64, dtype=np.uint8)[bit], id=item_id)
        return {"id": item_id, "items": len(index)}

    return apply


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_changes_that_wait_together_are_saved_together(folder):
    saves, results = [], {}
    queue = queue_of(folder, saves)

    def run(i):
        results[i] = queue.submit(adder(f"n{i}", i + 1))

    with writer_lock(folder):  # another writer holds the index: the changes queue up
        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        threads[0].start()
        wait_for(queue._writing.locked)  # the first change is being written (waits)
        time.sleep(0.05)
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(queue._pending) == 7)  # the other 7 wait together
    for t in threads:
        t.join()
    assert len(saves) == 2 and saves[-1] == 9  # one save for the first, one for the 7
    assert sorted(HammingIndex.load(folder).ids) == sorted(["first"] + [f"n{i}" for i in range(8)])
    assert sorted(r["items"] for r in results.values())[-1] == 9


def test_a_refused_change_leaves_the_others(folder):
    saves = []
    queue = queue_of(folder, saves)
    outcomes = {}

    def run(name, apply):
        try:
            outcomes[name] = queue.submit(apply)
        except ValueError as err:
            outcomes[name] = str(err)

    with writer_lock(folder):
        threads = [threading.Thread(target=run, args=(name, apply)) for name, apply in
                   [("a", adder("a", 1)), ("dup", adder("first", 2)), ("b", adder("b", 3))]]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(0.2)  # let them queue; however they are batched, the outcome is one
    for t in threads:
        t.join()
    assert outcomes["dup"] == "id 'first' taken"
    assert {outcomes["a"]["id"], outcomes["b"]["id"]} == {"a", "b"}
    assert sorted(HammingIndex.load(folder).ids) == ["a", "b", "first"]


def test_a_failed_save_fails_every_change_of_its_batch(folder):
    queue = queue_of(folder, [], fail=OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space left on device"):
        queue.submit(adder("a", 1))
    assert HammingIndex.load(folder).ids == ["first"]
    # The queue goes on: the next batch reads the index on disk again.
    queue.save = lambda index: index.save(folder)
    assert queue.submit(adder("b", 2)) == {"id": "b", "items": 2}
    assert HammingIndex.load(folder).ids == ["first", "b"]
