"""What every derived copy of a bundle (float16 weights, int8) does once its own model.onnx is staged:
the source's other files beside it, the source's manifest with the copy's `quantization` block, published.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Collection
from pathlib import Path

from bundle import FORMAT_VERSION, portable, publish, write_manifest
from service.store import Bundle


def publish_copy(bundle: Bundle, staged: Path, out_store: Path, name: str, version: int, quantization: dict, *,
                 graphs: Collection[str] | None = None, **fields) -> None:
    """Finish `staged` (holding the copy's model.onnx) as `<out_store>/<name>/<version>`: the manifest keeps
    the source's `graphs` (default: all), the copy's classify graph states `quantization`, `fields` override
    top-level entries."""
    for f in bundle.path.iterdir():
        if f.is_file() and f.name not in ("model.onnx", "manifest.json"):
            shutil.copyfile(f, staged / f.name)
    manifest = portable(json.loads((bundle.path / "manifest.json").read_text(encoding="utf-8")))
    kept = {k: dict(v) for k, v in manifest["graphs"].items() if graphs is None or k in graphs}
    kept["classify"]["quantization"] = quantization
    manifest.update(format_version=FORMAT_VERSION, name=name, version=version, graphs=kept, **fields)
    write_manifest(staged, manifest)
    publish(staged, out_store, name, version)
