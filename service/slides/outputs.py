"""What a finished slide gives back: GeoJSON for QuPath, CSV, the heatmap, the summary.

The GeoJSON follows WSInfer's `write_geojson.py`: one Feature per tile, a closed Polygon ring in level-0
pixels, `properties` with `"objectType": "tile"`, `"isLocked": true` and every class probability in
`measurements`. WSInfer leaves `classification` out; here it holds `{"name": <predicted class>}` so that
QuPath colours the tiles by class, and the probabilities stay measurements.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

# Distinct colours for up to 12 classes (then they repeat), as QuPath-friendly RGB.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0)]


def _rgb_int(rgb: tuple[int, int, int]) -> int:
    # QuPath stores a class colour as one packed integer (ARGB with alpha 255 is negative in Java; RGB is fine).
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


def geojson(coords: np.ndarray, size: tuple[int, int], probabilities: np.ndarray, classes: list[str]) -> dict:
    """A FeatureCollection QuPath imports: one locked tile per row, classified, with probabilities."""
    w, h = size
    features = []
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    for (x, y), probs, best in zip(coords.tolist(), probabilities.tolist(), predicted.tolist(), strict=True):
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        features.append({
            "type": "Feature",
            "id": f"tile-{x}-{y}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "tile",
                "isLocked": True,
                "classification": {"name": classes[best], "color": list(PALETTE[best % len(PALETTE)])},
                "measurements": {f"prob_{c}": float(p) for c, p in zip(classes, probs, strict=True)},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def csv_text(coords: np.ndarray, size: tuple[int, int], probabilities: np.ndarray, classes: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["x", "y", "width", "height", *[f"prob_{c}" for c in classes]])
    for (x, y), probs in zip(coords.tolist(), probabilities.tolist(), strict=True):
        writer.writerow([x, y, size[0], size[1], *[f"{p:.6f}" for p in probs]])
    return buf.getvalue()


def tissue_fractions(probabilities: np.ndarray, tissue: np.ndarray, classes: list[str]) -> dict[str, float]:
    """The share of classified tissue each class takes, weighting every tile by its tissue fraction."""
    if len(probabilities) == 0:
        return {c: 0.0 for c in classes}
    predicted = probabilities.argmax(axis=1)
    weights = tissue.astype(np.float64)
    total = weights.sum() or 1.0
    return {c: float(weights[predicted == k].sum() / total) for k, c in enumerate(classes)}


def slide_answer(fractions: dict[str, float]) -> dict:
    label = max(fractions, key=fractions.get) if fractions else None
    return {"label": label, "fraction": fractions.get(label, 0.0) if label else 0.0,
            "fractions": fractions,
            "rule": "the class with the largest share of the classified tissue (tiles counted by their tissue "
                    "fraction); a summary of tile predictions, not a diagnosis"}


def _ramp(values: np.ndarray) -> np.ndarray:
    """Blue (0) -> red (1), jet-like, as uint8 RGB."""
    x = values[..., None]
    ramps = np.concatenate([1.5 - np.abs(4 * x - 3), 1.5 - np.abs(4 * x - 2), 1.5 - np.abs(4 * x - 1)], axis=-1)
    return (np.clip(ramps, 0, 1) * 255).astype(np.uint8)


def heatmap_rgba(thumbnail_size: tuple[int, int], slide_size: tuple[int, int], coords: np.ndarray,
                 size: tuple[int, int], probabilities: np.ndarray, class_index: int | None) -> Image.Image:
    """A transparent overlay the thumbnail's size: each tile painted in its predicted class's colour
    (opacity from its probability), or, with `class_index`, that class's probability on a blue-red ramp."""
    tw, th = thumbnail_size
    sx, sy = tw / slide_size[0], th / slide_size[1]
    overlay = np.zeros((th, tw, 4), dtype=np.uint8)
    if len(coords):
        if class_index is None:
            best = probabilities.argmax(axis=1)
            colours = np.asarray([PALETTE[b % len(PALETTE)] for b in best], dtype=np.uint8)
            alphas = (np.clip(probabilities.max(axis=1), 0, 1) * 200 + 30).astype(np.uint8)
        else:
            colours = _ramp(probabilities[:, class_index].astype(np.float32))
            alphas = np.full(len(coords), 170, dtype=np.uint8)
        for (x, y), colour, alpha in zip(coords.tolist(), colours, alphas, strict=True):
            x0, y0 = int(x * sx), int(y * sy)
            x1, y1 = max(x0 + 1, int(round((x + size[0]) * sx))), max(y0 + 1, int(round((y + size[1]) * sy)))
            overlay[y0:y1, x0:x1, :3] = colour
            overlay[y0:y1, x0:x1, 3] = alpha
    return Image.fromarray(overlay, mode="RGBA")


def heatmap_png(thumbnail: Image.Image, overlay: Image.Image) -> bytes:
    base = thumbnail.convert("RGBA")
    out = Image.alpha_composite(base, overlay.resize(base.size, Image.Resampling.NEAREST)).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def write_results(out_dir: Path, *, coords: np.ndarray, size: tuple[int, int], probabilities: np.ndarray,
                  tissue: np.ndarray, classes: list[str], thumbnail: Image.Image, slide_size: tuple[int, int]) -> None:
    """Every result file of one slide into `out_dir` (the job directory, or the CLI's --out per slide)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "tiles.npz", coords=coords, size=np.asarray(size), probabilities=probabilities.astype(np.float32),
             tissue=tissue.astype(np.float32), classes=np.asarray(classes), slide_size=np.asarray(slide_size))
    (out_dir / "tiles.geojson").write_text(json.dumps(geojson(coords, size, probabilities, classes)))
    (out_dir / "tiles.csv").write_text(csv_text(coords, size, probabilities, classes))
    thumbnail.save(out_dir / "thumbnail.png", format="PNG")
    overlay = heatmap_rgba(thumbnail.size, slide_size, coords, size, probabilities, None)
    (out_dir / "heatmap.png").write_bytes(heatmap_png(thumbnail, overlay))


def load_tiles(out_dir: Path) -> dict:
    with np.load(out_dir / "tiles.npz", allow_pickle=False) as data:
        return {"coords": data["coords"], "size": tuple(int(v) for v in data["size"]),
                "probabilities": data["probabilities"], "tissue": data["tissue"],
                "classes": [str(c) for c in data["classes"]], "slide_size": tuple(int(v) for v in data["slide_size"])}
