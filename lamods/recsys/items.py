"""MovieLens item metadata: titles of the items, read from the data set's item file.

MovieLens-100K ships ``u.item`` beside ``u.data``: one item a line, ``|``-separated,
``id|title|release date|video release date|IMDb URL|genre flags...``, in Latin-1.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_item_titles(path: str | os.PathLike) -> dict[int, str]:
    """Raw item id -> title from a MovieLens-100K ``u.item`` file; ``{}`` when it is absent.

    Lines whose first field is not an integer id are skipped.

    Examples::

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d) / "u.item"
        ...     _ = p.write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|0\\n"
        ...                      "2|GoldenEye (1995)|01-Jan-1995||http://y|0|1\\n")
        ...     read_item_titles(p), read_item_titles(Path(d) / "missing")
        ({1: 'Toy Story (1995)', 2: 'GoldenEye (1995)'}, {})
    """
    path = Path(path)
    if not path.is_file():
        return {}
    titles: dict[int, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        if len(fields) > 1 and fields[0].isdigit():
            titles[int(fields[0])] = fields[1]
    return titles
