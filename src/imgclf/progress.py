"""Progress reporting without a UI dependency.

Core functions report phases and progress to a `Reporter`. The base class logs messages
through the `imgclf` logger and ignores progress; the CLI passes a subclass that draws
Rich progress bars on stderr.
"""

from __future__ import annotations

import logging
from typing import Optional

log = logging.getLogger("imgclf")


class Reporter:
    """Receives phase messages and progress updates from long-running core functions."""

    def message(self, text: str) -> None:
        log.info(text)

    def progress_start(self, key: str, description: str, total: Optional[int]) -> None:
        """Begin a progress task; `total` None means unknown until the first update."""

    def progress_update(self, key: str, completed: int, total: Optional[int] = None, **fields) -> None:
        """Set the completed count of a task; `fields` carry extra figures such as the loss."""

    def progress_end(self, key: str) -> None:
        """Finish a task and remove its bar."""
