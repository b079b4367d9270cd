"""``python -m deploy index export-engine``: an index as a search engine's bulk NDJSON.

See :mod:`deploy.engine_export` for the formats and :mod:`deploy.cli` for the parser.
"""

from __future__ import annotations

import json

from deploy.engine_export import export_engine
from deploy.errors import printable


def cmd_export_engine(args) -> int:
    name = args.name or args.index.resolve().name.lower()
    out, mapping_path, count = export_engine(
        args.index, args.format, args.out, name, overwrite=args.overwrite
    )
    if args.json:
        print(json.dumps({
            "index": str(args.index), "format": args.format, "name": name, "items": count,
            "bulk": str(out), "mapping": str(mapping_path),
        }, indent=2))  # fmt: skip
        return 0
    print(
        f"wrote {count} items of {printable(args.index)} as {args.format} index "
        f"{printable(name)!r}: mapping {printable(mapping_path)}, bulk {printable(out)}"
    )
    return 0
