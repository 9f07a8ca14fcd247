"""`mpp` on /classify and /adapt: images sent with their pixel size are rescaled to the model's first.

The tiny bundles are exported again with a stated, anisotropic pixel size (1.0 x 0.5 um per input pixel,
as BreakHis's two axes differ), beside the originals, which state none.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import (
    CLASSES,
    SIZE,
    TEMPERATURE,
    assert_error,
    make_app,
    png,
    reference_probabilities,
)

PIXEL_SIZE = {"x": 1.0, "y": 0.5, "estimated": False, "source": "test: stated for the tiny bundles"}


@pytest.fixture(scope="module")
def px_store(bundles, tmp_path_factory):
    """tiny_cls/tiny_emb (no pixel size) and px_cls/px_emb: the same networks with PIXEL_SIZE."""
    from training.export import export_bundle

    store = tmp_path_factory.mktemp("px_store")
    shutil.copytree(bundles["store"], store, dirs_exist_ok=True)
    export_bundle(bundles["cls"], store, "px_cls", classes=CLASSES, input_size=(SIZE, SIZE), temperature=TEMPERATURE,
                  pixel_size_um=PIXEL_SIZE)
    export_bundle(bundles["emb"], store, "px_emb", classes=CLASSES, task="embedding", input_size=(SIZE, SIZE),
                  pixel_size_um=PIXEL_SIZE)
    return store


@pytest.fixture(scope="module")
def client(px_store, tmp_path_factory):
    with TestClient(make_app(px_store, tmp_path_factory.mktemp("state"), max_wait_ms=2.0)) as c:
        yield c


def resample(client, model: str) -> Image.Resampling:
    """The model's own interpolation, as a client reading GET /models would use it."""
    (info,) = [m for m in client.get("/models").json()["models"] if m["name"] == model]
    return Image.Resampling[info["preprocessing"]["interpolation"].upper()]


def noise(width: int, height: int, seed: int) -> np.ndarray:
    # smooth enough that resampling matters less than where the pixels come from, random enough to tell apart
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 4), max(2, width // 4), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


def classify(client, arrays, **data) -> list[dict]:
    files = [("files", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(arrays)]
    r = client.post("/classify", files=files, data={"top_k": str(len(CLASSES)), **data})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def probabilities(result: dict) -> np.ndarray:
    by_label = {t["label"]: t["probability"] for t in result["top_k"]}
    return np.asarray([by_label[c] for c in CLASSES])


def test_mpp_rescales_as_the_client_would(client, bundles):
    # 0.25 um/px to 1.0 x 0.5: 128 x 64 px -> 32 x 32, the input itself; 200 x 100 -> 50 x 50, centre cut
    interp = resample(client, "px_cls")
    exact, larger = noise(128, 64, 1), noise(200, 100, 2)
    served = classify(client, [exact, larger], model="px_cls", mpp="0.25")
    mine_exact = np.asarray(Image.fromarray(exact).resize((32, 32), interp))
    mine_larger = np.asarray(Image.fromarray(larger).resize((50, 50), interp).crop((9, 9, 41, 41)))
    sent = classify(client, [mine_exact, mine_larger], model="px_cls")
    for with_mpp, without in zip(served, sent, strict=True):
        np.testing.assert_allclose(probabilities(with_mpp), probabilities(without), rtol=0, atol=1e-6)
        assert "rescaled" not in without
    # and those are the eager network's answers on the pixels the client made
    np.testing.assert_allclose([probabilities(r) for r in served],
                               reference_probabilities(bundles["cls"], [mine_exact, mine_larger]), atol=1e-4)
    assert served[0]["rescaled"] == {"from_mpp": 0.25, "to_um": [1.0, 0.5], "size": [32, 32], "crop": [0, 0, 32, 32],
                                     "estimated": False, "source": PIXEL_SIZE["source"]}
    assert served[1]["rescaled"]["size"] == [50, 50] and served[1]["rescaled"]["crop"] == [9, 9, 32, 32]
    # without mpp the 200 x 100 image is squashed to the input instead: another answer
    (squashed,) = classify(client, [larger], model="px_cls")
    assert np.abs(probabilities(squashed) - probabilities(served[1])).max() > 1e-3


def test_no_mpp_answers_as_before(client, bundles):
    arrays = [noise(32, 32, 3), noise(90, 70, 4)]
    for model in ("px_cls", "tiny_cls"):
        results = classify(client, arrays, model=model)
        assert all(set(r) == {"filename", "label", "score", "top_k"} for r in results)
        resized = [np.asarray(Image.fromarray(a).resize((SIZE, SIZE), resample(client, model))) for a in arrays]
        np.testing.assert_allclose([probabilities(r) for r in results],
                                   reference_probabilities(bundles["cls"], resized), atol=1e-4)


def test_image_smaller_than_the_input_at_mpp_is_refused(client):
    files = [("files", ("small.png", png(noise(64, 64, 5)), "image/png"))]
    err = assert_error(client.post("/classify", files=files, data={"model": "px_cls", "mpp": "0.25"}),
                       422, "image_too_small_at_mpp")
    # 64 x 64 at 0.25 um/px is 16 x 32 px at 1.0 x 0.5 um/px
    assert "small.png" in err["message"] and "16x32" in err["message"] and "32x32" in err["message"]
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("mpp", ["0", "-1", "nan", "NaN", "inf", "-inf", "abc", "1e9", "0.001"])
def test_bad_mpp_is_a_422(client, mpp):
    image = [("files", ("a.png", png(noise(128, 64, 6)), "image/png"))]
    for route, data in (("/classify", {"model": "px_cls"}), ("/adapt", {"model": "px_emb", "labels": "x"})):
        err = assert_error(client.post(route, files=image, data={**data, "mpp": mpp}), 422, "invalid_request")
        assert any("mpp" in d["loc"] for d in err["detail"]), err


def test_a_bundle_without_pixel_size_refuses_mpp(client, px_store, tmp_path):
    image = [("files", ("a.png", png(noise(128, 64, 7)), "image/png"))]
    err = assert_error(client.post("/classify", files=image, data={"model": "tiny_cls", "mpp": "0.25"}),
                       422, "model_resolution_unknown")
    assert "tiny_cls/1" in err["message"] and "pixel size" in err["message"]
    assert_error(client.post("/adapt", files=image * 2, data={"model": "tiny_emb", "labels": "a,b", "mpp": "0.25"}),
                 422, "model_resolution_unknown")
    # with the service's stated fallback it goes through, and says that the model's pixel size is an estimate
    with TestClient(make_app(px_store, tmp_path / "state", max_wait_ms=2.0, slide_model_mpp=1.0)) as other:
        (result,) = classify(other, [noise(128, 64, 7)], model="tiny_cls", mpp="0.5")
    assert result["rescaled"]["to_um"] == [1.0, 1.0] and result["rescaled"]["size"] == [64, 32]
    assert result["rescaled"]["estimated"] is True and "HISTOSERVE_SLIDE_MODEL_MPP" in result["rescaled"]["source"]


def _support(seed: int, width: int, height: int):
    arrays, labels = [], []
    for k, label in enumerate(("tumour", "stroma")):
        for i in range(2):
            base = np.full((height, width, 3), 40 + 170 * k, dtype=np.int16)
            jitter = noise(width, height, seed + 10 * k + i).astype(np.int16) // 6
            arrays.append(np.clip(base + jitter, 0, 255).astype(np.uint8))
            labels.append(label)
    return arrays, labels


def _adapt(client, arrays, labels, **data):
    files = [("files", (f"s{i}.png", png(a), "image/png")) for i, a in enumerate(arrays)]
    r = client.post("/adapt", files=files, data={"labels": ",".join(labels), "head": "prototype", **data})
    assert r.status_code == 201, r.text
    return r.json()


def test_adapt_rescales_support_images_and_adapters_inherit_the_pixel_size(client):
    interp = resample(client, "px_emb")
    arrays, labels = _support(20, 160, 80)  # 0.25 um/px: 40 x 40 at the model's pixel size, cut to 32 x 32
    made = _adapt(client, arrays, labels, model="px_emb", mpp="0.25")
    mine = [np.asarray(Image.fromarray(a).resize((40, 40), interp).crop((4, 4, 36, 36))) for a in arrays]
    plain = _adapt(client, mine, labels, model="px_emb")
    stores = client.app.state.adapters
    np.testing.assert_allclose(stores.get(made["id"]).prototypes, stores.get(plain["id"]).prototypes,
                               rtol=0, atol=1e-6)
    assert [n["filename"] for n in made["rescaled"]] == [f"s{i}.png" for i in range(len(arrays))]
    assert made["rescaled"][0]["size"] == [40, 40] and made["rescaled"][0]["crop"] == [4, 4, 32, 32]
    assert "rescaled" not in plain and "rescaled" not in client.get(f"/adapters/{made['id']}").json()

    # classify with the adapter and mpp: the embedding bundle's pixel size applies
    query = noise(160, 80, 30)
    (served,) = classify(client, [query], adapter=made["id"], mpp="0.25")
    (sent,) = classify(client, [np.asarray(Image.fromarray(query).resize((40, 40), interp).crop((4, 4, 36, 36)))],
                       adapter=made["id"])
    np.testing.assert_allclose(probabilities_of(served), probabilities_of(sent), rtol=0, atol=1e-6)
    assert served["rescaled"]["to_um"] == [1.0, 0.5]

    # an adapter on a bundle without pixel size cannot take mpp
    other = _adapt(client, *_support(40, 32, 32), model="tiny_emb")
    files = [("files", ("q.png", png(query), "image/png"))]
    assert_error(client.post("/classify", files=files, data={"adapter": other["id"], "mpp": "0.25"}),
                 422, "model_resolution_unknown")


def probabilities_of(result: dict) -> np.ndarray:
    return np.asarray([t["probability"] for t in sorted(result["top_k"], key=lambda t: t["label"])])


def test_openapi_documents_mpp_and_what_it_did(client):
    schema = client.get("/openapi.json").json()
    for path in ("/classify", "/adapt"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        ref = body["$ref"].rsplit("/", 1)[-1]
        assert "mpp" in schema["components"]["schemas"][ref]["properties"]
    components = schema["components"]["schemas"]
    assert {"from_mpp", "to_um", "size", "crop"} <= set(components["Rescaled"]["properties"])
    assert "rescaled" in components["ImageResult"]["properties"]
    assert "rescaled" in components["AdaptResponse"]["properties"]


def test_rescaling_past_the_pixel_limit_is_refused_before_resizing():
    from service.imaging import ImageError, rescale_to_model

    # 40 x 40 px at 100 um/px would be 4000 x 4000 px at 1 um/px
    with pytest.raises(ImageError) as refused:
        rescale_to_model(Image.new("RGB", (40, 40)), 100.0, (1.0, 1.0), (SIZE, SIZE), "bilinear", max_pixels=10**6)
    assert refused.value.status == 422 and refused.value.code == "image_too_large_at_mpp"
    assert "4000x4000" in str(refused.value)
