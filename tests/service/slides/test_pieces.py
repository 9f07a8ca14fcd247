"""The slide pieces on their own: model resolution, tissue mask, the background lane, the CLI."""
from __future__ import annotations

import asyncio
import csv
import json

import numpy as np
import pytest
from PIL import Image

from service.slides.pipeline import service_classifier
from service.slides.resolution import model_resolution
from service.slides.tissue import tissue_mask
from tests.service.slides.conftest import MODEL_STORE


def test_resolution_prefers_the_manifest_then_estimates_then_the_setting():
    stated = {"pixel_size_um": {"x": 0.5, "y": 0.25, "estimated": False, "source": "paper"}}
    r = model_resolution(stated, (112, 224), None)
    assert (r.width_um, r.height_um, r.estimated, r.source) == (112.0, 28.0, False, "paper")
    sized = {"pixel_size_um": {"x": 0.5, "y": 0.5, "image_size": [448, 448]}}
    assert model_resolution(sized, (112, 112), None).width_um == 224.0
    ebhi = model_resolution({"training": {"data": "../shared/data/ebhi_seg"}}, (112, 112), None)
    assert ebhi.estimated and ebhi.width_um == pytest.approx(268.8)
    breakhis = model_resolution({"training": {"data": "/data/breakhis_200x"}}, (48, 48), None)
    assert breakhis.width_um == pytest.approx(343.0) and breakhis.height_um == pytest.approx(225.4)
    assert model_resolution({}, (84, 84), 2.0).width_um == 168.0
    assert model_resolution({}, (84, 84), None) is None
    assert model_resolution({"pixel_size_um": {"x": -1, "y": "a"}}, (84, 84), None) is None


def test_tissue_mask_keeps_stain_and_drops_glass_dust_and_grey(ebhi_dir):
    tile = Image.open(next(ebhi_dir.rglob("*.png"))).convert("RGB").resize((64, 64))
    canvas = np.full((128, 256, 3), 250, dtype=np.uint8)
    canvas[32:96, 16:80] = np.asarray(tile)
    canvas[60:62, 150:152] = (120, 40, 120)  # a 2-px speck of stain: too small to keep
    canvas[20:100, 180:240] = 150  # grey (unsaturated) smudge
    mask = tissue_mask(Image.fromarray(canvas))
    assert mask[36:92, 20:76].mean() > 0.9
    assert not mask[:, 100:].any()


def test_service_tiles_use_the_background_lane():
    seen = []

    class Model:
        class bundle:
            ref, classes, input_size, manifest = "m/1", ["a", "b"], (8, 8), {}
            preprocessing = None

        async def infer(self, tiles, *, priority="interactive"):
            seen.append(priority)
            return [{"probabilities": np.asarray([0.25, 0.75], np.float32)} for _ in tiles]

    classifier = service_classifier(Model(), fallback_mpp=1.0)
    out = asyncio.run(classifier.infer([np.zeros((3, 8, 8), np.float32)] * 3))
    assert seen == ["background"] and out.shape == (3, 2)


def test_cli_writes_the_same_results(ebhi_slide, tmp_path, capsys, monkeypatch):
    pytest.importorskip("openslide")
    from service.slides.__main__ import main

    monkeypatch.setenv("HISTOSERVE_MODEL_STORE", str(MODEL_STORE))
    broken = tmp_path / "broken.svs"
    broken.write_text("not a slide")
    rc = main([str(ebhi_slide["path"]), str(broken), "--model", "ebhi_cbam_resnet18", "--out", str(tmp_path / "out")])
    assert rc == 1  # one slide failed, the other went through
    out = tmp_path / "out" / ebhi_slide["path"].name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiles_classified"] == len(ebhi_slide["cells"])
    geo = json.loads((out / "tiles.geojson").read_text())
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    assert len(geo["features"]) == len(rows) == len(ebhi_slide["cells"])
    assert Image.open(out / "heatmap.png").size == Image.open(out / "thumbnail.png").size
    err = capsys.readouterr().err
    assert "broken.svs: failed" in err and "5/5 tiles" in err


def test_heatmap_deep_zoom_tiles_keep_their_transparency():
    openslide = pytest.importorskip("openslide")
    from openslide.deepzoom import DeepZoomGenerator

    from service.slides.deepzoom import TransparentDeepZoom

    overlay = np.zeros((300, 600, 4), dtype=np.uint8)
    overlay[100:200, 100:300] = (230, 25, 75, 180)  # one scored region on nothing
    image = Image.fromarray(overlay, mode="RGBA")
    ours = TransparentDeepZoom(openslide.ImageSlide(image), tile_size=254, overlap=1, limit_bounds=False)
    library = DeepZoomGenerator(openslide.ImageSlide(image), tile_size=254, overlap=1, limit_bounds=False)
    assert ours.get_dzi("png") == library.get_dzi("png") and ours.level_tiles == library.level_tiles
    top = ours.level_count - 1
    tile = ours.get_tile(top, (0, 0))
    assert tile.mode == "RGBA" and tile.size == library.get_tile(top, (0, 0)).size
    alpha = np.asarray(tile)[..., 3]
    assert alpha[20, 20] == 0 and alpha[150, 150] == 180
    assert tuple(np.asarray(tile)[150, 150, :3]) == (230, 25, 75)
    # the library's own tile is opaque white there: what the viewer's opacity slider used to fade to
    assert tuple(np.asarray(library.get_tile(top, (0, 0)).convert("RGBA"))[20, 20]) == (255, 255, 255, 255)
    # a tile beside the scored region is wholly transparent; a downsampled level keeps both
    assert np.asarray(ours.get_tile(top, (2, 0)))[..., 3].max() == 0
    small = np.asarray(ours.get_tile(top - 2, (0, 0)))[..., 3]  # 150 x 75, one tile
    assert small[5, 5] == 0 and small[37, 50] > 0
    with pytest.raises(ValueError):
        ours.get_tile(top, (9, 9))


def test_tissue_fraction_of_an_image_counts_stained_pixels_only(ebhi_dir):
    from service.slides.tissue import tissue_fraction

    glass = np.clip(235 + np.random.default_rng(0).normal(0, 6, (224, 224, 3)), 0, 255)
    assert tissue_fraction(glass) < 0.05 and tissue_fraction(np.zeros((224, 224, 3))) == 0.0
    half = glass.copy()
    half[:, :112] = (180, 90, 160)  # an H&E-like purple on the left half
    assert abs(tissue_fraction(half) - 0.5) < 0.02
    image = next(p for p in sorted((ebhi_dir / "normal").iterdir()) if p.suffix == ".png")
    assert tissue_fraction(np.asarray(Image.open(image).convert("RGB"), np.float32)) > 0.5
