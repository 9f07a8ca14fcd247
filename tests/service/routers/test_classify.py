"""POST /classify through the ASGI app: answers match eager PyTorch; every bad input gets its 4xx."""
from __future__ import annotations

import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import (
    CLASSES,
    SIZE,
    assert_error,
    encode,
    png,
    random_rgb,
    reference_probabilities,
)


@pytest.fixture()
def client(app_factory):
    with TestClient(app_factory(max_files=4, max_upload_bytes=64 * 1024, max_image_pixels=1_000_000)) as c:
        yield c


def _files(*blobs: bytes, name: str = "img.png") -> list:
    return [("files", (f"{i}-{name}", b, "image/png")) for i, b in enumerate(blobs)]


def test_classify_matches_eager_pytorch(client, bundles):
    arrays = [random_rgb(s) for s in range(3)]
    r = client.post("/classify", files=_files(*map(png, arrays)), data={"top_k": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["adapter"]) == ("tiny_cls", 1, None)
    expected = reference_probabilities(bundles["cls"], arrays)
    for result, probs in zip(body["results"], expected, strict=True):
        assert result["label"] == CLASSES[int(np.argmax(probs))]
        assert result["score"] == pytest.approx(float(probs.max()), abs=1e-4)
        assert len(result["top_k"]) == 2
        assert [t["label"] for t in result["top_k"]] == [CLASSES[i] for i in np.argsort(-probs)[:2]]
        for t in result["top_k"]:
            assert t["probability"] == pytest.approx(float(probs[CLASSES.index(t["label"])]), abs=1e-4)
    assert r.headers["x-request-id"]


def test_dihedral_tta_averages_the_eight_views(client, bundles):
    from PIL import Image

    from service.inference import DIHEDRAL

    arrays = [random_rgb(s) for s in range(2)]
    r = client.post("/classify", files=_files(*map(png, arrays)), data={"tta": "dihedral", "top_k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tta"] == "dihedral" and len(body["results"]) == 2
    for array, result in zip(arrays, body["results"], strict=True):
        views = [array if t is None else np.asarray(Image.fromarray(array).transpose(t)) for t in DIHEDRAL]
        expected = reference_probabilities(bundles["cls"], views).mean(axis=0)
        assert result["label"] == CLASSES[int(np.argmax(expected))]
        assert result["score"] == pytest.approx(float(expected.max()), abs=1e-4)
    plain = client.post("/classify", files=_files(png(arrays[0]))).json()
    assert plain["tta"] == "none" and plain["results"][0]["score"] != pytest.approx(body["results"][0]["score"])


def test_tta_refuses_what_it_cannot_do(app_factory):
    with TestClient(app_factory(max_files=4, max_queue=16)) as c:
        blobs = [png(random_rgb(s)) for s in range(3)]
        assert_error(c.post("/classify", files=_files(*blobs), data={"tta": "dihedral"}), 422, "too_many_files_for_tta")
        assert c.post("/classify", files=_files(*blobs[:2]), data={"tta": "dihedral"}).status_code == 200
        assert c.post("/classify", files=_files(blobs[0]), data={"tta": "rot90"}).status_code == 422
        assert_error(c.post("/classify", files=_files(blobs[0]), data={"tta": "dihedral", "adapter": "any"}), 422,
                     "tta_with_adapter")


def test_model_by_name_and_version_and_top_k_clamped(client):
    r = client.post("/classify", files=_files(png(random_rgb(7))), data={"model": "tiny_cls/1", "top_k": "50"})
    assert r.status_code == 200, r.text
    probs = [t["probability"] for t in r.json()["results"][0]["top_k"]]
    assert len(probs) == len(CLASSES) and sum(probs) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("fmt,kwargs", [("JPEG", {"quality": 95}), ("TIFF", {}), ("BMP", {}), ("WEBP", {"lossless": True})])
def test_formats_accepted(client, fmt, kwargs):
    r = client.post("/classify", files=[("files", ("x.img", encode(random_rgb(1), fmt, **kwargs), "image/x"))])
    assert r.status_code == 200, r.text


def test_any_size_is_resized(client, bundles):
    big = np.random.default_rng(3).integers(0, 256, size=(90, 70, 3), dtype=np.uint8)
    r = client.post("/classify", files=_files(png(big)))
    assert r.status_code == 200, r.text


def _bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header that claims enormous dimensions, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_bad_inputs_each_get_their_4xx(client):
    good = png(random_rgb(0))
    cases = {
        "empty upload": (client.post("/classify", files=_files(b"")), 422, "empty_file"),
        "no files field": (client.post("/classify", data={"model": "tiny_cls"}, files=[("other", ("a", b"x"))]),
                           422, "invalid_request"),
        "text named .png": (client.post("/classify", files=_files(b"hello, I am text\n" * 10)), 415, "unsupported_image"),
        "truncated png": (client.post("/classify", files=_files(good[: len(good) // 2])), 415, "corrupt_image"),
        "truncated jpeg": (client.post("/classify", files=_files(encode(random_rgb(1), "JPEG")[:300])), 415, None),
        "decompression bomb": (client.post("/classify", files=_files(_bomb_png(60000, 60000))), 413, "image_too_large"),
        "over byte limit": (client.post("/classify", files=_files(b"\x89PNG" + b"0" * 70 * 1024)), 413,
                            "payload_too_large"),
        "too many files": (client.post("/classify", files=_files(*[good] * 5)), 413, "too_many_files"),
        "unknown model": (client.post("/classify", files=_files(good), data={"model": "nope"}), 404, "model_not_found"),
        "unknown version": (client.post("/classify", files=_files(good), data={"model": "tiny_cls/9"}), 404, None),
        "bad model ref": (client.post("/classify", files=_files(good), data={"model": "../../etc"}), 404, None),
        "top_k not a number": (client.post("/classify", files=_files(good), data={"top_k": "many"}), 422, None),
        "top_k zero": (client.post("/classify", files=_files(good), data={"top_k": "0"}), 422, None),
        "json body": (client.post("/classify", json={"files": ["a"]}), 415, "unsupported_media_type"),
        "embedding bundle": (client.post("/classify", files=_files(good), data={"model": "tiny_emb"}), 422,
                             "not_a_classifier"),
        "unknown adapter": (client.post("/classify", files=_files(good), data={"adapter": "x" * 22}), 404,
                            "adapter_not_found"),
    }
    for name, (response, status, code) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert_error(response, status, code)
    # and it still serves
    assert client.post("/classify", files=_files(good)).status_code == 200


def test_no_multipart_boundary_is_a_clear_4xx(client):
    r = client.post("/classify", content=b"garbage", headers={"content-type": "multipart/form-data"})
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["message"]


def test_chunked_body_over_limit_is_413(client):
    def gen():
        for _ in range(100):
            yield b"0" * 1024
    r = client.post("/classify", content=gen(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert_error(r, 413, "payload_too_large")


def test_parallel_requests_are_batched_and_each_gets_its_own_answer(app_factory, bundles):
    # One batch worker: the first request holds the ORT call; eight more queue behind it and must run as
    # one batch (two workers at once: tests/service/test_batching.py and the full-queue test below).
    app = app_factory(max_batch_size=8, max_wait_ms=0.0, concurrent_batches=1)
    arrays = [random_rgb(100 + i) for i in range(9)]
    expected = reference_probabilities(bundles["cls"], arrays)
    with TestClient(app) as c:
        batcher = c.app.state.registry.resolve("tiny_cls").batcher
        entered, release, real_run = threading.Event(), threading.Event(), batcher.run_batch

        def held_run(x):
            entered.set()
            release.wait(30)
            return real_run(x)

        batcher.run_batch = held_run

        def one(i):
            r = c.post("/classify", files=_files(png(arrays[i])))
            assert r.status_code == 200, r.text
            return r.json()["results"][0]

        with ThreadPoolExecutor(max_workers=9) as pool:
            first = pool.submit(one, 0)
            assert entered.wait(30)
            rest = [pool.submit(one, i) for i in range(1, 9)]
            deadline = time.monotonic() + 30
            while batcher.depth < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            release.set()
            results = [first.result(), *(f.result() for f in rest)]
        for result, probs in zip(results, expected, strict=True):
            assert result["label"] == CLASSES[int(np.argmax(probs))]
            assert result["score"] == pytest.approx(float(probs.max()), abs=1e-4)
        metrics = c.get("/metrics").text
    assert _sample(metrics, 'histoserve_batch_size_count{model="tiny_cls",version="1"}') == 2  # [1, 8]
    assert _sample(metrics, 'histoserve_batch_size_sum{model="tiny_cls",version="1"}') == 9
    assert _sample(metrics, 'histoserve_batch_size_bucket{le="1.0",model="tiny_cls",version="1"}') == 1


def test_a_request_past_the_queue_deadline_gets_503_at_once(app_factory):
    # Batches of 1, one worker; the ORT call is held. With one request running and one queued, the next
    # one's estimated wait is a whole batch, longer than a 1 ms deadline once a batch has been timed.
    with TestClient(app_factory(max_batch_size=1, max_queue_wait_ms=1.0, concurrent_batches=1)) as c:
        batcher = c.app.state.registry.resolve("tiny_cls").batcher
        entered, release, real_run = threading.Event(), threading.Event(), batcher.run_batch

        def slow_then_held(x):
            if not entered.is_set():
                time.sleep(0.05)  # the first batch takes at least 50 ms: the estimate starts from there
            entered.set()
            release.wait(30)
            return real_run(x)

        batcher.run_batch = slow_then_held
        release.set()
        assert c.post("/classify", files=_files(png(random_rgb(1)))).status_code == 200
        release.clear()
        entered.clear()
        batcher.max_queue_wait_ms = None  # let one run and one queue
        with ThreadPoolExecutor(max_workers=2) as pool:
            held = [pool.submit(c.post, "/classify", files=_files(png(random_rgb(i)))) for i in range(2)]
            deadline = time.monotonic() + 30
            while (not entered.is_set() or batcher.depth < 1) and time.monotonic() < deadline:
                time.sleep(0.01)
            batcher.max_queue_wait_ms = 1.0
            r = c.post("/classify", files=_files(png(random_rgb(9))))
            release.set()
            assert_error(r, 503, "overloaded")
            assert "would wait" in r.json()["error"]["message"]
            assert int(r.headers["retry-after"]) >= 1
            assert [f.result().status_code for f in held] == [200, 200]


def test_full_queue_answers_503_with_retry_after(app_factory):
    # Batches of 1, two workers and a queue of 2; the ORT calls are held until the test releases them.
    with TestClient(app_factory(max_queue=2, max_files=2, max_batch_size=1, concurrent_batches=2)) as c:
        batcher = c.app.state.registry.resolve("tiny_cls").batcher
        release, real_run, running = threading.Event(), batcher.run_batch, threading.Semaphore(0)

        def held_run(x):
            running.release()
            release.wait(60)
            return real_run(x)

        batcher.run_batch = held_run
        with ThreadPoolExecutor(max_workers=4) as pool:
            def post(i: int):
                return pool.submit(c.post, "/classify", files=_files(png(random_rgb(i))))

            # Two running first, then two queued: four sent at once can all reach the queue before either worker
            # takes one (a loaded machine did that), and the queue of 2 then refuses the last two.
            waiting = [post(0), post(1)]
            assert running.acquire(timeout=60) and running.acquire(timeout=60), "the two workers did not start"
            waiting += [post(2), post(3)]
            # generous: on a loaded 2-core machine uploads took over 10 s to reach the queue
            deadline = time.monotonic() + 60
            while batcher.depth < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert batcher.depth == 2
            r = c.post("/classify", files=_files(png(random_rgb(9))))
            release.set()
            assert_error(r, 503, "overloaded")
            assert int(r.headers["retry-after"]) >= 1
            assert [f.result().status_code for f in waiting] == [200, 200, 200, 200]
        assert c.post("/classify", files=_files(png(random_rgb(0)))).status_code == 200


def _sample(text: str, key: str) -> float:
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{key} not in metrics")


def test_input_size_matters(client):
    # a sanity check that SIZE matches the bundle (a changed fixture would silently test nothing)
    assert client.get("/models/tiny_cls").json()["input_size"] == [SIZE, SIZE]
