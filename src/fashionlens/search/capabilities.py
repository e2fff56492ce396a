"""What an index backend can do (`backends.IndexBackend.capabilities`).

Its own module, below both `backends` (the protocol and the registry) and `index` (the
FAISS backend), so that the registry imports the FAISS backend and never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexCapabilities:
    """What an index can do, which decides how a query is planned.

    exact: similarities are exact inner products of the float vectors (no re-ranking).
    filtered: `search(mask=...)` restricts the results to allowed ids inside the index.
    range_search: `range_search` returns every vector above a similarity.
    incremental: vectors can be added and removed one batch at a time.
    """

    exact: bool
    filtered: bool = True
    range_search: bool = False
    incremental: bool = True
