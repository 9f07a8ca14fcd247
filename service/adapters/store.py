"""Where adapters live: an abstract store the routers use, and the atomic file backend.

The file backend keeps one `.npz` per adapter under `<state_dir>/adapters/` (format in `model.py`).
Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of the directory; a
writer killed half-way leaves only a `.tmp-*` file, which start-up removes, and never a damaged adapter.
File names are the server's own random ids, never anything the client sent.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import threading
from pathlib import Path

from ..files import fsync_dir, write_atomic
from .model import ADAPTER_ID, Adapter, decode, encode

log = logging.getLogger("histoserve.adapters")

_TMP_PREFIX = ".tmp-"


class AdapterStore(abc.ABC):
    """What the routers need from a store. `save` and `delete` may block (they run in worker threads)."""

    @abc.abstractmethod
    def load(self) -> list[tuple[str, str]]:
        """Read every stored adapter; return (what, why) for each one skipped (already logged)."""

    @abc.abstractmethod
    def save(self, adapter: Adapter) -> None: ...

    @abc.abstractmethod
    def get(self, adapter_id: str) -> Adapter | None: ...

    @abc.abstractmethod
    def all(self) -> list[Adapter]:
        """Every adapter, oldest first."""

    @abc.abstractmethod
    def delete(self, adapter_id: str) -> bool:
        """True when the adapter existed."""

    @abc.abstractmethod
    def __len__(self) -> int: ...


class FileAdapterStore(AdapterStore):
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "adapters"
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()  # writes run in worker threads

    def __len__(self) -> int:
        return len(self._adapters)

    def load(self) -> list[tuple[Path, str]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        skipped: list[tuple[Path, str]] = []
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(_TMP_PREFIX):
                # Left by a writer that died before its rename: never a complete adapter.
                log.warning("removing partial adapter file %s left by an interrupted write", path.name)
                skipped.append((path, "partial temporary file"))
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if path.suffix != ".npz" or not ADAPTER_ID.match(path.stem):
                continue
            try:
                adapter = decode(path.read_bytes(), path.stem)
            except Exception as e:  # any damage at all: skip this file, keep the others
                log.warning("skipping unreadable adapter file %s: %s", path.name, e)
                skipped.append((path, str(e)))
                continue
            self._adapters[adapter.id] = adapter
        return skipped

    def save(self, adapter: Adapter) -> None:
        """Write atomically, then make it visible."""
        payload = encode(adapter)
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            write_atomic(self.dir / f"{adapter.id}.npz", payload, tmp_prefix=f"{_TMP_PREFIX}{adapter.id}-")
            self._adapters[adapter.id] = adapter

    def get(self, adapter_id: str) -> Adapter | None:
        return self._adapters.get(adapter_id)

    def all(self) -> list[Adapter]:
        return sorted(self._adapters.values(), key=lambda a: a.created_at)

    def delete(self, adapter_id: str) -> bool:
        with self._lock:
            adapter = self._adapters.pop(adapter_id, None)
            if adapter is None:
                return False
            # The path is built from the stored adapter's own id, which the server generated.
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{adapter.id}.npz").unlink()
            fsync_dir(self.dir)
            return True
