"""What every derived copy of a bundle (float16 weights, int8, test-time augmentation) does once its own
model.onnx is staged: the source's other files beside it, the source's manifest with what the copy changed in
its classify graph, published.
"""
from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np

from bundle import FORMAT_VERSION, portable, publish, write_manifest
from service.store import Bundle


def graph_outputs(model_file: Path, images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """Every output of a classify graph on `images`, in float32 on the CPU, `batch` images per run."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {"image": images[i : i + batch]}) for i in range(0, len(images), batch)]
    return {n: np.concatenate([c[j] for c in chunks]) for j, n in enumerate(names)}


def copy_arguments(description: str, source_help: str) -> argparse.ArgumentParser:
    """The command line every derived copy starts from: the source bundle and where the copy goes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("bundle", type=Path, help=source_help)
    p.add_argument("--store", type=Path, required=True, help="where the copy is published")
    p.add_argument("--name", default=None, help="default: the source's name")
    p.add_argument("--version", type=int, default=None, help="default: the source's version")
    return p


def publish_copy(bundle: Bundle, staged: Path, out_store: Path, name: str, version: int, quantization: dict | None,
                 *, graphs: Collection[str] | None = None, classify: dict | None = None, **fields) -> None:
    """Finish `staged` (holding the copy's model.onnx) as `<out_store>/<name>/<version>`: the manifest keeps
    the source's `graphs` (default: all), the copy's classify graph states `quantization` (None: the source's)
    and the entries of `classify`, `fields` override top-level entries."""
    for f in bundle.path.iterdir():
        if f.is_file() and f.name not in ("model.onnx", "manifest.json"):
            shutil.copyfile(f, staged / f.name)
    manifest = portable(json.loads((bundle.path / "manifest.json").read_text(encoding="utf-8")))
    kept = {k: dict(v) for k, v in manifest["graphs"].items() if graphs is None or k in graphs}
    if quantization is not None:
        kept["classify"]["quantization"] = quantization
    kept["classify"].update(classify or {})
    manifest.update(format_version=FORMAT_VERSION, name=name, version=version, graphs=kept, **fields)
    write_manifest(staged, manifest)
    publish(staged, out_store, name, version)
