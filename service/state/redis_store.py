"""Adapters in Redis, shared by every replica (`HISTOSERVE_STATE_URL=redis://host:port/db`).

Keys, all under `histoserve:`:
- `adapter:<id>`: the adapter as one blob, the same bytes the file backend writes (`model.encode`);
- `adapters`: the set of stored ids;
- `adapters:version`: a counter, incremented by every save and delete.

A save or a delete is one MULTI/EXEC transaction (blob, id set and counter together), so no replica
ever sees half an adapter or an id without its blob. Each replica keeps decoded adapters in memory and
validates that cache against the counter on every lookup (one GET): after a DELETE has been answered on
any replica, the next lookup anywhere reads a new counter, re-reads the id set and drops the adapter.

With Redis unreachable, every operation that needs it raises a 503 `state_unavailable` with Retry-After
(never a 500), and for `retry_after_s` afterwards fails fast without touching the network, so a Redis
outage stalls the event loop (lookups are synchronous: one GET) for at most one failed attempt and its
retry, `timeout_s` each, per window. Nothing is served from the cache
meanwhile: it could hold an adapter another replica has deleted. The store recovers by itself: the first
call after the window tries again.
"""
from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..adapters.model import ADAPTER_ID, Adapter, decode, encode
from ..adapters.store import AdapterStore
from ..errors import ServiceError

log = logging.getLogger("histoserve.state")

PREFIX = "histoserve:"
IDS = PREFIX + "adapters"
VERSION = PREFIX + "adapters:version"


def _blob_key(adapter_id: str) -> str:
    return f"{PREFIX}adapter:{adapter_id}"


def redact(url: str) -> str:
    """The URL without its password, for logs and /readyz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisAdapterStore(AdapterStore):
    def __init__(self, url: str, *, timeout_s: float = 1.0, retry_after_s: float = 2.0):
        self.url = redact(url)
        self.retry_after_s = retry_after_s
        # One retry on a fresh connection: after a Redis restart the pooled connections are dead, and the
        # first command on each would otherwise fail although Redis is back.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30)
        self._cache: dict[str, Adapter] = {}
        self._version: bytes | None = None  # the counter the cache was filled under; None: never filled
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_error: str | None = None

    # --- failure handling

    def _unavailable(self, error: Exception | None = None) -> ServiceError:
        if error is not None:
            if self._last_error is None:
                log.warning("state store %s unreachable: %s", self.url, error)
            self._last_error = f"{type(error).__name__}: {error}"
            self._down_until = time.monotonic() + self.retry_after_s
        return ServiceError(503, "state_unavailable", "the shared state store (Redis) is unreachable; retry shortly",
                            headers={"Retry-After": str(max(1, round(self.retry_after_s)))})

    def _call(self, fn):
        """Run `fn(redis)`; a connection problem becomes a 503, and the next calls fail fast for a while."""
        if time.monotonic() < self._down_until:
            raise self._unavailable()
        try:
            result = fn(self._redis)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
            raise self._unavailable(e) from e
        if self._last_error is not None:
            log.info("state store %s reachable again", self.url)
            self._last_error = None
        return result

    # --- the cache and its validation

    def _sync(self) -> None:
        """Bring the cache in line with Redis if the counter moved (one GET when it has not)."""
        version = self._call(lambda r: r.get(VERSION))
        with self._lock:
            if self._version is not None and version == self._version:
                return
            # The counter is read before the ids: a write in between only makes the next lookup sync again.
            ids = {i.decode() for i in self._call(lambda r: r.smembers(IDS))}
            for gone in set(self._cache) - ids:
                del self._cache[gone]
            missing = sorted(ids - set(self._cache))
            if missing:
                blobs = self._call(lambda r: r.mget([_blob_key(i) for i in missing]))
                for adapter_id, blob in zip(missing, blobs, strict=True):
                    if blob is None:  # deleted since the id set was read: the next sync settles it
                        continue
                    try:
                        self._cache[adapter_id] = decode(blob, adapter_id)
                    except Exception as e:  # a damaged or foreign entry: skip it, keep the others
                        log.warning("skipping unreadable adapter %s in %s: %s", adapter_id, self.url, e)
            self._version = version

    # --- AdapterStore

    def load(self) -> list[tuple[str, str]]:
        """Fill the cache; with Redis down, start anyway (adapter routes answer 503 until it is back)."""
        try:
            self._sync()
        except ServiceError:
            log.warning("starting without the state store %s; adapter requests answer 503 until it is back",
                        self.url)
        return []

    def save(self, adapter: Adapter) -> None:
        payload = encode(adapter)

        def write(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as tx:
                tx.set(_blob_key(adapter.id), payload)
                tx.sadd(IDS, adapter.id)
                tx.incr(VERSION)
                tx.execute()

        self._call(write)
        with self._lock:
            self._cache[adapter.id] = adapter

    def get(self, adapter_id: str) -> Adapter | None:
        if not ADAPTER_ID.match(adapter_id):
            return None
        self._sync()
        return self._cache.get(adapter_id)

    def all(self) -> list[Adapter]:
        self._sync()
        return sorted(self._cache.values(), key=lambda a: a.created_at)

    def delete(self, adapter_id: str) -> bool:
        def remove(r: redis.Redis) -> int:
            with r.pipeline(transaction=True) as tx:
                tx.delete(_blob_key(adapter_id))
                tx.srem(IDS, adapter_id)
                tx.incr(VERSION)
                return tx.execute()[0]

        existed = self._call(remove)
        with self._lock:
            self._cache.pop(adapter_id, None)
        return bool(existed)

    def __len__(self) -> int:
        # Counts and metrics must not fail: with Redis away this is the last count seen.
        try:
            self._sync()
        except ServiceError:
            pass
        return len(self._cache)

    def health(self) -> dict:
        """For /readyz: reachable or not, and why not. Pings even inside the fail-fast window."""
        try:
            self._redis.ping()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
            return {"backend": "redis", "url": self.url, "ok": False, "error": f"{type(e).__name__}: {e}"}
        return {"backend": "redis", "url": self.url, "ok": True}

    def close(self) -> None:
        self._redis.close()
