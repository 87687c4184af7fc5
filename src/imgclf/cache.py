"""Where imgclf keeps caches, and the cache of per-file scan results."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

SCAN_CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """`$IMGCLF_CACHE_DIR`, else `$XDG_CACHE_HOME/imgclf`, else `~/.cache/imgclf`."""
    explicit = os.environ.get("IMGCLF_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgclf"


class ScanCache:
    """Per-file verification results keyed by path, size and modification time.

    A file whose size and mtime are unchanged is not read again: its content hash,
    perceptual hash and size, or the reason it was unusable, come from the cache.
    """

    def __init__(self, root: str, cache_dir: Optional[str | os.PathLike] = None):
        folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / "scan"
        key = hashlib.sha256(f"{SCAN_CACHE_FORMAT}|{root}".encode()).hexdigest()[:24]
        self.path = folder / f"{key}.json"
        self.entries: dict[str, list] = {}
        self.hits = 0
        try:
            self.entries = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def _stamp(path: str) -> Optional[list[int]]:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def get(self, path: str) -> Optional[dict]:
        """The cached result for `path`, or None when absent or the file changed."""
        entry = self.entries.get(path)
        if entry is None or entry[0] != self._stamp(path):
            return None
        self.hits += 1
        return entry[1]

    def put(self, path: str, result: dict) -> None:
        stamp = self._stamp(path)
        if stamp is not None:
            self.entries[path] = [stamp, result]

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written is only a lost speed-up."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.partial")
            # ensure_ascii keeps file names that are not valid UTF-8 (surrogate escapes) writable.
            partial.write_text(json.dumps(self.entries), "utf-8")
            os.replace(partial, self.path)
        except OSError:
            pass
