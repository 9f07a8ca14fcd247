"""POST /slides end to end on the committed default bundles and test slides built from real tiles.

One app for the module (warm-up once); every bad input is sent to it too, and it must stay ready.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings
from tests.service.slides.conftest import MODEL_STORE, WSI_FIXTURES

openslide = pytest.importorskip("openslide")

KEY = "slide-test-key-0123456789"
AUTH = {"X-API-Key": KEY}
EBHI = "ebhi_cbam_resnet18"
BREAKHIS = "breakhis_cbam_resnet20"
MAX_SLIDE_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def slide_root(tmp_path_factory, breakhis_slide):
    root = tmp_path_factory.mktemp("slide_root")
    shutil.copy(breakhis_slide["path"], root / "breakhis.tiff")
    (root / "fixtures").mkdir()
    if WSI_FIXTURES.is_dir():
        for name in ("small.svs", "boxes.tiff", "boxes_0.dcm", "boxes_1.dcm", "unreadable.svs"):
            shutil.copy(WSI_FIXTURES / name, root / "fixtures" / name)
    outside = tmp_path_factory.mktemp("outside") / "secret.svs"
    outside.write_bytes(b"not for clients")
    (root / "escape.svs").symlink_to(outside)
    (root / "notes.txt").write_text("not a slide")
    return root


@pytest.fixture(scope="module")
def client(slide_root, tmp_path_factory):
    settings = Settings(model_store=MODEL_STORE, state_dir=tmp_path_factory.mktemp("state"), slide_root=slide_root,
                        max_slide_bytes=MAX_SLIDE_BYTES, api_key=KEY, max_wait_ms=2.0, slide_batch_size=4,
                        # below the test slides' sizes: uploads to /slides must pass under their own limit
                        max_upload_bytes=MAX_UPLOAD_BYTES)
    with TestClient(create_app(settings)) as c:
        yield c


def post_slide(client, *, file: bytes | None = None, filename: str = "slide.tiff", headers=AUTH, **fields):
    files = {"file": (filename, file, "application/octet-stream")} if file is not None else None
    data = {k: str(v) for k, v in fields.items()}
    if files is None:
        # multipart even without a file, as a browser form would send it
        files = {"_": (None, "")}
    return client.post("/slides", files=files, data=data, headers=headers)


def wait(client, job_id: str) -> dict:
    for _ in range(2400):  # bounded: a few minutes at most on a slow machine
        record = client.get(f"/slides/{job_id}").json()
        if record["status"] in ("done", "failed", "cancelled"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {record}")


def run_job(client, **kwargs) -> dict:
    r = post_slide(client, **kwargs)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return wait(client, r.json()["id"])


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture(scope="module")
def ebhi_job(client, ebhi_slide) -> dict:
    record = run_job(client, file=ebhi_slide["path"].read_bytes(), model=EBHI)
    assert record["status"] == "done", record
    return record


def test_slide_uploads_have_their_own_body_limit(client, ebhi_slide):
    assert ebhi_slide["path"].stat().st_size > MAX_UPLOAD_BYTES
    # the default limit still holds elsewhere
    body = b"x" * (MAX_UPLOAD_BYTES + 1)
    assert_error(client.post("/classify", files={"files": ("a.png", body, "image/png")}), 413)


def test_ebhi_job_summary(ebhi_job, ebhi_slide):
    summary = ebhi_job["summary"]
    assert ebhi_job["progress"] == {"done": 5, "total": 5}
    assert summary["slide"]["width"] == 2240 and summary["slide"]["mpp_x"] == pytest.approx(1.2)
    # EBHI's model field is 224 px at ~1.2 um (an estimate, and it says so); the input is 112 px,
    # so the tiles are read from level 1 (downsample 2) at 112 px.
    assert summary["model_resolution"]["estimated"] is True
    assert summary["tiling"]["tile_width_px"] == 224 and summary["tiling"]["level"] == 1
    assert summary["tiling"]["read_width_px"] == 112
    assert summary["tiles_classified"] == len(ebhi_slide["cells"])
    fractions = summary["class_fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert summary["answer"]["label"] == max(fractions, key=fractions.get)
    assert "largest share" in summary["answer"]["rule"]
    assert summary["tissue_area_mm2"] > 0
    # nothing of the file beyond size and spacing
    assert "slide_file" not in ebhi_job and "properties" not in json.dumps(ebhi_job)


def test_geojson_reads_as_qupath_does(client, ebhi_job, ebhi_slide):
    r = client.get(f"/slides/{ebhi_job['id']}/tiles.geojson")
    assert r.status_code == 200
    collection = json.loads(r.content)
    assert collection["type"] == "FeatureCollection"
    classes = list(ebhi_job["summary"]["class_fractions"])
    corners = set()
    for feature in collection["features"]:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed, four corners
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        assert max(xs) - min(xs) == 224 and max(ys) - min(ys) == 224
        corners.add((min(xs), min(ys)))
        props = feature["properties"]
        assert props["objectType"] == "tile" and props["isLocked"] is True
        measurements = props["measurements"]
        assert set(measurements) == {f"prob_{c}" for c in classes}
        assert sum(measurements.values()) == pytest.approx(1.0, abs=1e-4)
        best = max(measurements, key=measurements.get)
        assert props["classification"]["name"] == best.removeprefix("prob_")
    # tiles land exactly on the tissue, none on glass or dust
    assert corners == {(c * 224, r * 224) for c, r in ebhi_slide["cells"]}


def test_csv_matches_geojson_and_classify_on_the_same_pixels(client, ebhi_job, ebhi_slide):
    rows = list(csv.DictReader(io.StringIO(client.get(f"/slides/{ebhi_job['id']}/tiles.csv").text)))
    classes = list(ebhi_job["summary"]["class_fractions"])
    assert len(rows) == len(ebhi_slide["cells"])
    assert list(rows[0])[:4] == ["x", "y", "width", "height"]
    # /classify on the very pixels the job read (level 1, 112 px) gives the same probabilities
    slide = openslide.OpenSlide(str(ebhi_slide["path"]))
    files = []
    for row in rows:
        region = slide.read_region((int(row["x"]), int(row["y"])), 1, (112, 112))
        white = Image.new("RGBA", region.size, (255, 255, 255, 255))
        buf = io.BytesIO()
        Image.alpha_composite(white, region).convert("RGB").save(buf, format="PNG")
        files.append(("files", (f"{row['x']}_{row['y']}.png", buf.getvalue(), "image/png")))
    slide.close()
    answer = client.post("/classify", files=files, data={"model": EBHI, "top_k": str(len(classes))})
    assert answer.status_code == 200, answer.text
    for row, result in zip(rows, answer.json()["results"], strict=True):
        expected = {t["label"]: t["probability"] for t in result["top_k"]}
        for c in classes:
            assert float(row[f"prob_{c}"]) == pytest.approx(expected[c], abs=2e-5)


def test_heatmap_thumbnail_and_deep_zoom(client, ebhi_job):
    base = f"/slides/{ebhi_job['id']}"
    thumb = Image.open(io.BytesIO(client.get(f"{base}/thumbnail.png").content))
    heat = Image.open(io.BytesIO(client.get(f"{base}/heatmap.png").content))
    assert thumb.size == heat.size and thumb.size[0] / thumb.size[1] == pytest.approx(2240 / 1344, rel=0.01)
    assert np.asarray(heat.convert("RGB")).astype(int).sum() < np.asarray(thumb.convert("RGB")).astype(int).sum()
    one_class = client.get(f"{base}/heatmap.png", params={"class": "polyp"})
    assert one_class.status_code == 200 and one_class.headers["content-type"] == "image/png"
    assert_error(client.get(f"{base}/heatmap.png", params={"class": "nope"}), 422, "unknown_class")

    dzi = ET.fromstring(client.get(f"{base}/slide.dzi").content)
    size = dzi.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert (size.get("Width"), size.get("Height")) == ("2240", "1344") and dzi.get("Format") == "jpeg"
    top = int(np.ceil(np.log2(2240)))
    tile = client.get(f"{base}/slide_files/{top}/0_0.jpeg")
    assert tile.status_code == 200 and Image.open(io.BytesIO(tile.content)).format == "JPEG"
    assert_error(client.get(f"{base}/slide_files/{top}/99_99.jpeg"), 404, "tile_not_found")
    assert_error(client.get(f"{base}/slide_files/{top + 5}/0_0.jpeg"), 404, "tile_not_found")
    assert_error(client.get(f"{base}/slide_files/0/../../x.jpeg"), 404)
    overlay = ET.fromstring(client.get(f"{base}/heatmap.dzi").content)
    assert overlay.get("Format") == "png"
    assert client.get(f"{base}/heatmap_files/0/0_0.png").status_code == 200


def test_heatmap_overlay_tiles_are_transparent_off_tissue(client, ebhi_job, ebhi_slide):
    base = f"/slides/{ebhi_job['id']}"
    size = ET.fromstring(client.get(f"{base}/heatmap.dzi").content).find(
        "{http://schemas.microsoft.com/deepzoom/2008}Size")
    width, height = int(size.get("Width")), int(size.get("Height"))
    top = int(np.ceil(np.log2(max(width, height))))
    r = client.get(f"{base}/heatmap_files/{top}/0_0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    tile = Image.open(io.BytesIO(r.content))
    assert tile.mode == "RGBA"
    alpha = np.asarray(tile)[..., 3]

    def at(col: int, row: int) -> int:  # the centre of a 224-px grid cell, in overlay pixels
        return int(alpha[int((row + 0.5) * 224 * height / 1344), int((col + 0.5) * 224 * width / 2240)])

    assert at(0, 0) == 0 and at(0, 1) == 0  # glass: the slide shows through
    scored = [cell for cell in ebhi_slide["cells"] if (cell[0] + 1) * 224 * width / 2240 < tile.size[0]
              and (cell[1] + 1) * 224 * height / 1344 < tile.size[1]]
    assert scored and all(at(*cell) > 0 for cell in scored)
    # JPEG has no alpha: the same tile asked as .jpeg is on white
    jpeg = Image.open(io.BytesIO(client.get(f"{base}/heatmap_files/{top}/0_0.jpeg").content))
    assert jpeg.format == "JPEG" and min(jpeg.getpixel((int(112 * width / 2240), int(112 * height / 1344)))) > 240


def test_slide_routes_document_their_answers(slide_root, tmp_path):
    schema = create_app(Settings(model_store=MODEL_STORE, state_dir=tmp_path, slide_root=slide_root)).openapi()
    json_routes = {("/slides", "post", "202"), ("/slides/files", "get", "200"),
                   ("/slides/{job_id}", "get", "200"), ("/slides/{job_id}", "delete", "200")}
    for path, method, status in json_routes:
        content = schema["paths"][path][method]["responses"][status]["content"]["application/json"]
        name = content["schema"]["$ref"].rsplit("/", 1)[-1]
        assert schema["components"]["schemas"][name]["properties"], (path, method, name)
    job = schema["components"]["schemas"]["SlideJob"]["properties"]
    assert {"id", "status", "progress", "summary", "error", "slide"} <= set(job)


def test_slide_answers_are_the_job_records_unchanged(client, ebhi_job):
    # the response models document the answers; they add, drop and convert nothing
    slides = client.app.state.slides
    for record in slides.jobs.jobs.values():
        answer = client.get(f"/slides/{record.id}").json()
        assert answer == json.loads(json.dumps(record.public())), record.id
    assert "summary" in client.get(f"/slides/{ebhi_job['id']}").json()
    assert client.get("/slides/files").json() == {"files": slides.list_files()}


def test_finer_slide_is_read_two_levels_up(client, ebhi_slide_fine):
    record = run_job(client, file=ebhi_slide_fine["path"].read_bytes(), model=EBHI)
    assert record["status"] == "done", record
    tiling = record["summary"]["tiling"]
    # 0.6 um/px: the 268.8 um field is 448 level-0 px, 4 per model pixel: level 2 (downsample 4), 112 px
    assert (tiling["tile_width_px"], tiling["level"], tiling["read_width_px"]) == (448, 2, 112)
    features = client.get(f"/slides/{record['id']}/tiles.geojson").json()["features"]
    corners = {tuple(f["geometry"]["coordinates"][0][0]) for f in features}
    assert corners == {(c * 448, r * 448) for c, r in ebhi_slide_fine["cells"]}


def test_breakhis_by_path_tiles_are_anisotropic(client, breakhis_slide):
    listed = client.get("/slides/files").json()["files"]
    paths = {f["path"] for f in listed}
    assert "breakhis.tiff" in paths and "escape.svs" not in paths and "notes.txt" not in paths
    record = run_job(client, path="breakhis.tiff", model=BREAKHIS)
    assert record["status"] == "done", record
    assert record["source"] == "path" and record["path"] == "breakhis.tiff"
    tiling = record["summary"]["tiling"]
    assert (tiling["tile_width_px"], tiling["tile_height_px"]) == (breakhis_slide["tile_w"], breakhis_slide["tile_h"])
    features = client.get(f"/slides/{record['id']}/tiles.geojson").json()["features"]
    corners = {tuple(f["geometry"]["coordinates"][0][0]) for f in features}
    assert corners == {(c * breakhis_slide["tile_w"], r * breakhis_slide["tile_h"]) for c, r in breakhis_slide["cells"]}
    assert set(features[0]["properties"]["measurements"]) == {"prob_benign", "prob_malignant"}


@pytest.mark.parametrize("path, status, code", [
    ("../breakhis.tiff", 422, "invalid_path"),
    ("/etc/passwd", 422, "invalid_path"),
    ("fixtures/../../x.svs", 422, "invalid_path"),
    ("escape.svs", 422, "invalid_path"),  # a symlink out of the root
    ("missing.svs", 404, "slide_not_found"),
    ("notes.txt", 415, None),
])
def test_paths_outside_the_root_are_refused(client, path, status, code):
    assert_error(post_slide(client, path=path, model=EBHI), status, code)


def test_bad_uploads_get_4xx_and_the_service_stays_ready(client, ebhi_slide, no_mpp_slide):
    good = ebhi_slide["path"].read_bytes()
    assert_error(post_slide(client, file=b"patient: J. Doe\n" * 100, filename="text.svs"), 415, "unsupported_slide")
    if WSI_FIXTURES.is_dir():
        assert_error(post_slide(client, file=(WSI_FIXTURES / "unopenable.tiff").read_bytes(),
                                filename="unopenable.tiff"), 415)
    truncated = post_slide(client, file=good[: len(good) // 3], filename="cut.tiff", model=EBHI)
    if truncated.status_code == 202:  # the header survived: the job must fail with a reason instead
        record = wait(client, truncated.json()["id"])
        assert record["status"] == "failed" and record["error"]["message"]
    else:
        assert 400 <= truncated.status_code < 500 and truncated.json()["error"]["message"]
    assert_error(post_slide(client, file=os.urandom(MAX_SLIDE_BYTES + 10), filename="big.svs"), 413, "slide_too_large")
    assert_error(post_slide(client, file=no_mpp_slide.read_bytes(), filename="nompp.tiff"), 422, "mpp_required")
    assert_error(post_slide(client, file=b"", filename="empty.svs"), 422, "empty_file")
    assert_error(post_slide(client, file=good, model=EBHI, mpp="-1"), 422, "invalid_request")
    assert_error(post_slide(client, file=good, model=EBHI, mpp="nan"), 422, "invalid_request")
    assert_error(post_slide(client, file=good, model="no_such_model"), 404, "model_not_found")
    assert_error(post_slide(client, file=good, adapter="no-such-adapter-000000"), 404)
    assert_error(post_slide(client, file=good, path="breakhis.tiff"), 422, "invalid_request")
    assert_error(post_slide(client), 422, "invalid_request")
    assert_error(client.post("/slides", content=b"{}", headers={**AUTH, "content-type": "application/json"}), 415)
    assert_error(client.post("/slides", content=b"--x\r\ngarbage", headers={
        **AUTH, "content-type": "multipart/form-data; boundary=x"}), 400)
    assert_error(post_slide(client, file=good, headers={}), 401)
    # no job directory is left behind by a refused upload
    jobs = client.app.state.slides.jobs.jobs
    state_dirs = {p.name for p in client.app.state.slides.store.root.iterdir()}
    assert state_dirs == set(jobs)
    assert client.get("/readyz").status_code == 200


def test_slide_without_mpp_runs_when_given_one(client, no_mpp_slide):
    record = run_job(client, file=no_mpp_slide.read_bytes(), filename="nompp.tiff", model=EBHI, mpp="0.5",
                     tile_size="128")
    assert record["status"] == "done", record
    assert record["summary"]["slide"]["mpp_source"] == "request"
    assert record["summary"]["tiles_classified"] == 0  # flat grey glass, no tissue


@pytest.mark.skipif(not WSI_FIXTURES.is_dir(), reason=f"wsi fixtures not found at {WSI_FIXTURES}")
def test_format_fixtures(client):
    # SVS of 16 px: opens, but smaller than one tile at the model's resolution -> a failed job with the reason
    small = run_job(client, path="fixtures/small.svs", model=EBHI)
    assert small["status"] == "failed" and small["error"]["code"] == "slide_too_small"
    assert small["slide"]["mpp_x"] == pytest.approx(0.499)
    # generic TIFF at 72 dpi: no microscope spacing, so `mpp` is required; with it and a tile size it runs
    assert_error(post_slide(client, path="fixtures/boxes.tiff", model=EBHI), 422, "mpp_required")
    boxes = run_job(client, path="fixtures/boxes.tiff", model=EBHI, mpp="0.5", tile_size="64")
    assert boxes["status"] == "done", boxes
    dicom = run_job(client, path="fixtures/boxes_0.dcm", model=EBHI, tile_size="16")
    assert dicom["status"] in ("done", "failed") and (dicom["status"] == "done" or dicom["error"]["message"])
    # an SVS whose tiles cannot be decoded: refused up front, or a failed job with the reason
    unreadable = post_slide(client, path="fixtures/unreadable.svs", model=EBHI, tile_size="16")
    if unreadable.status_code == 202:
        record = wait(client, unreadable.json()["id"])
        assert record["status"] == "failed" and record["error"]["message"]
    else:
        assert_error(unreadable, 422, "unreadable_slide")
    assert client.get("/readyz").status_code == 200


def test_unknown_ids_and_delete(client, ebhi_slide):
    assert_error(client.get("/slides/nope"), 404, "slide_job_not_found")
    assert_error(client.get("/slides/nope/tiles.geojson"), 404, "slide_job_not_found")
    assert_error(client.delete("/slides/nope", headers=AUTH), 404, "slide_job_not_found")
    record = run_job(client, file=ebhi_slide["path"].read_bytes(), model=EBHI)
    job_dir = client.app.state.slides.store.job_dir(record["id"])
    assert job_dir.is_dir()
    assert_error(client.delete(f"/slides/{record['id']}"), 401)
    r = client.delete(f"/slides/{record['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert not job_dir.exists()
    assert_error(client.get(f"/slides/{record['id']}"), 404)


def test_metrics_count_jobs_and_tiles(client, ebhi_job):
    text = client.get("/metrics").text
    assert 'histoserve_slide_jobs{state="done"}' in text
    line = next(ln for ln in text.splitlines()
                if ln.startswith(f'histoserve_slide_tiles_classified_total{{model="{EBHI}"'))
    assert float(line.split()[-1]) >= 5
    assert "histoserve_slide_tiles_per_second" in text


def test_slide_with_a_few_shot_adapter(client, ebhi_slide, ebhi_dir):
    files, labels = [], []
    for label in ("normal", "polyp"):
        for path in sorted((ebhi_dir / label).glob("*.png"))[:2]:
            buf = io.BytesIO()  # small copies: this app's default body limit is tight on purpose
            Image.open(path).convert("RGB").resize((84, 84)).save(buf, format="PNG")
            files.append(("files", (path.name, buf.getvalue(), "image/png")))
            labels.append(label)
    made = client.post("/adapt", files=files, data={"labels": ",".join(labels), "model": "ebhi_fewshot_dual_attention"},
                       headers=AUTH)
    assert made.status_code == 201, made.text
    adapter_id = made.json()["id"]
    assert_error(post_slide(client, file=ebhi_slide["path"].read_bytes(), adapter=adapter_id, model=EBHI),
                 422, "model_mismatch")
    record = run_job(client, file=ebhi_slide["path"].read_bytes(), adapter=adapter_id)
    assert record["status"] == "done", record
    assert record["adapter"] == adapter_id
    # the adapter inherits its embedding bundle's resolution (trained on EBHI: the same 268.8 um field)
    assert record["summary"]["model_resolution"]["tile_width_um"] == pytest.approx(268.8)
    assert set(record["summary"]["class_fractions"]) == {"normal", "polyp"}
    assert record["summary"]["tiles_classified"] == len(ebhi_slide["cells"])
