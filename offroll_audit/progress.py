"""How far a long step has got: the library reports, the command line decides whether to show.

Library functions that can take long on national data (loading, reading letters,
writing packs) take a `progress` argument. `SILENT`, the default, reports nowhere, so
the library stays usable from notebooks and tests; the CLI passes a rich display when
it writes to a terminal (console/render.py, `progress_display`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")


class Progress:
    """Reports nowhere; a display overrides `track` and `step`."""

    def track(self, items: Iterable[Item], description: str, total: int) -> Iterator[Item]:
        """Yield `items`, reporting each one done out of `total`."""
        yield from items

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """A step whose length is not known in advance."""
        yield


SILENT = Progress()
