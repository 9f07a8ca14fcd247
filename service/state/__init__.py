"""Where shared state lives: the file store of one process (default) or Redis shared by replicas.

`HISTOSERVE_STATE_URL` unset keeps adapters as files under `HISTOSERVE_STATE_DIR`; a `redis://` URL
keeps them in Redis (`redis_store.py`), so every replica sees the same adapters.
"""
from __future__ import annotations

from ..adapters.store import AdapterStore, FileAdapterStore
from ..settings import Settings


def open_adapter_store(settings: Settings) -> AdapterStore:
    """The adapter store the settings ask for (not loaded yet: call `load()` off the event loop)."""
    if settings.state_url is None:
        return FileAdapterStore(settings.state_dir)
    from .redis_store import RedisAdapterStore  # the redis client is only imported when it is used

    return RedisAdapterStore(settings.state_url)


def state_health(store: AdapterStore | None) -> dict:
    """What /readyz reports about the state store; blocking (a Redis ping): call it in a thread."""
    if store is None:
        return {"backend": None, "ok": False, "error": "not loaded yet"}
    health = getattr(store, "health", None)
    return health() if health is not None else {"backend": "file", "ok": True}
