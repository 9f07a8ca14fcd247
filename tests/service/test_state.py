"""service/state: which store the settings pick, and the Redis adapter store against a real redis-server
(two store instances stand for two replicas), including Redis going away and coming back."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import redis as redis_client

from service.adapters import FileAdapterStore, new_adapter
from service.errors import ServiceError
from service.settings import Settings
from service.state import open_adapter_store, state_health
from service.state.redis_store import IDS, VERSION, RedisAdapterStore, _blob_key, redact
from tests.deploy.test_live import free_port
from tests.deploy.test_scale_live import Redis


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found: install Debian's redis-server package (.ci/run does)")
    instance = Redis(binary, tmp_path_factory.mktemp("redis"))
    instance.start()
    try:
        yield instance
    finally:
        if instance.proc.poll() is None:
            instance.kill()


@pytest.fixture()
def url(server):
    # A fresh database per test: nothing leaks from one test into the next.
    redis_client.Redis.from_url(server.url).flushdb()
    return server.url


def adapter(name: str = "a", classes=("x", "y")):
    rng = np.random.default_rng(len(name))
    labels = [c for c in classes for _ in range(2)]
    return new_adapter(name=name, model="emb", version=1, embeddings=rng.normal(size=(len(labels), 8)),
                       labels=labels, distance="euclidean", temperature=1.0)


def test_settings_pick_the_store(tmp_path, url):
    assert isinstance(open_adapter_store(Settings(state_dir=tmp_path)), FileAdapterStore)
    assert state_health(FileAdapterStore(tmp_path)) == {"backend": "file", "ok": True}
    store = open_adapter_store(Settings(state_dir=tmp_path, state_url=url))
    assert isinstance(store, RedisAdapterStore)
    assert state_health(store)["ok"] is True
    with pytest.raises(ValueError, match="state_url"):
        Settings(state_url="http://127.0.0.1:6379")


def test_redact_hides_the_password():
    assert redact("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"


def test_two_replicas_see_each_others_writes_and_deletes(url):
    a, b = RedisAdapterStore(url), RedisAdapterStore(url)
    a.load(), b.load()
    made = adapter("shared")
    a.save(made)
    seen = b.get(made.id)
    assert seen is not None and seen.meta() == made.meta()
    np.testing.assert_array_equal(seen.prototypes, made.prototypes)
    assert [x.id for x in b.all()] == [made.id] and len(b) == 1
    assert b.delete(made.id) is True
    assert a.get(made.id) is None and a.all() == [] and len(a) == 0
    assert a.delete(made.id) is False
    # A new store (a replica started later) reads what is there.
    kept = adapter("kept")
    a.save(kept)
    late = RedisAdapterStore(url)
    late.load()
    assert [x.id for x in late.all()] == [kept.id]


def test_a_write_is_one_transaction_and_damage_is_skipped(url, caplog):
    store = RedisAdapterStore(url)
    good = adapter("good")
    store.save(good)
    r = redis_client.Redis.from_url(url)
    # Blob, id and counter moved together.
    assert r.sismember(IDS, good.id) and r.get(_blob_key(good.id)) and int(r.get(VERSION)) == 1
    # Something that is not an adapter, listed as one: skipped with a warning, the others still served.
    r.set(_blob_key("B" * 22), b"not an npz")
    r.sadd(IDS, "B" * 22)
    r.incr(VERSION)
    other = RedisAdapterStore(url)
    other.load()
    assert [x.id for x in other.all()] == [good.id]
    assert "skipping unreadable adapter" in caplog.text
    # Ids that could not be stored never reach Redis.
    assert other.get("../../etc/passwd") is None


def test_unreachable_redis_is_a_503_and_the_store_recovers(server, tmp_path):
    port = free_port()
    store = RedisAdapterStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5, retry_after_s=0.2)
    assert store.load() == []  # starts anyway
    assert len(store) == 0  # counts never fail
    with pytest.raises(ServiceError) as caught:
        store.get("A" * 22)
    assert caught.value.status == 503 and caught.value.code == "state_unavailable"
    assert caught.value.headers["Retry-After"] == "1"
    for call in (store.all, lambda: store.save(adapter()), lambda: store.delete("A" * 22)):
        with pytest.raises(ServiceError):
            call()
    health = store.health()
    assert health["ok"] is False and "ConnectionError" in health["error"]
    # Redis appears on that port: the store uses it once the fail-fast window is over.
    back = Redis(server.binary, tmp_path)
    back.port, back.url = port, f"redis://127.0.0.1:{port}/0"
    back.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                store.save(made := adapter("after"))
                break
            except ServiceError:
                assert time.monotonic() < deadline, "the store did not recover"
                time.sleep(0.05)
        assert store.get(made.id) is not None and store.health()["ok"] is True
    finally:
        back.kill()
