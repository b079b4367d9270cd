"""What the device command lines share: the encoder, the index, output folders.

Used by :mod:`deploy.cli_build`, :mod:`deploy.cli_index`, :mod:`deploy.index_input` and
:mod:`deploy.cli_search`; see :mod:`deploy.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.encoder import Encoder
from deploy.index import HammingIndex, IndexMismatchError
from deploy.locking import real_path
from deploy.mapped_index import MappedIndex


def open_encoder(args) -> Encoder:
    return Encoder.open(args.encoder, num_threads=args.threads)


def load_index(folder: Path, encoder: Encoder, encoder_path: Path) -> HammingIndex:
    """Loads ``folder``, refusing an index made by another encoder, code kind (float or
    int8) or bit length: codes of another kind are at wrong distances from the query."""
    try:
        return HammingIndex.load(
            folder, expected_fingerprint=encoder.codes_id, expected_bits=encoder.bits
        )
    except IndexMismatchError as err:
        raise _explained(err, encoder, encoder_path) from None


def open_for_search(
    folder: Path, encoder: Encoder, encoder_path: Path
) -> HammingIndex | MappedIndex:
    """``folder`` opened for searching only: memory-mapped (O(1) in its item count for a
    format-2 folder: codes and items stay on disk) unless it holds an Annoy forest, which
    only the loaded :class:`HammingIndex` searches. Refuses what :func:`load_index` does.
    Both give the same hits for an index without a forest (the exact scan)."""
    try:
        mapped = MappedIndex.open(
            folder, expected_fingerprint=encoder.codes_id, expected_bits=encoder.bits
        )
    except IndexMismatchError as err:
        raise _explained(err, encoder, encoder_path) from None
    return load_index(folder, encoder, encoder_path) if mapped.n_annoy else mapped


def _explained(err: IndexMismatchError, encoder: Encoder, encoder_path: Path) -> IndexMismatchError:
    stored = err.fingerprint
    why = ""
    if stored.split("+")[0] == encoder.fingerprint and stored != encoder.codes_id:
        why = (
            f"; the index holds {stored.partition('+')[2] or 'unlabelled'} codes of this "
            f"model, the encoder makes {encoder.codes_id.partition('+')[2]} codes"
        )
    return IndexMismatchError(
        f"{err}{why} (the encoder is {encoder_path})", err.fingerprint, err.bits
    )


def make_parent(flag: str, path: Path) -> None:
    """Creates the folder ``path`` goes into; one error naming the flag when it cannot."""
    parent = real_path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"{flag} {path}: cannot create the folder {parent}: a part of it is a file"
        ) from None
    except OSError as err:
        raise ValueError(
            f"{flag} {path}: cannot create the folder {parent}: {err.strerror}"
        ) from None


def waiting(folder: Path):
    """What to say while another writer holds ``folder``'s lock."""

    def say(holder: str) -> None:
        print(f"waiting for {holder}, which is writing {folder}", file=sys.stderr)

    return say
