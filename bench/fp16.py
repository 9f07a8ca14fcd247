"""A float16-weight copy of a bundle: half the bytes on disk, float32 arithmetic.

Every float32 initializer of at least `MIN_ELEMENTS` values is stored as float16 and cast back to
float32 by a Cast node in front of its users. ONNX Runtime folds those casts into float32 constants
when it loads the graph, so the copy computes in float32, on weights rounded to float16 (a relative
error of at most 2^-11). It is measured against its fp32 source on real images from the bundle's
dataset (every output: probabilities and top-1 for a classifier, the embedding's cosine for an
embedding bundle) and published with the contract's `quantization` block (precision float16) only
within `TOLERANCE`; the store's budget is what it is for.

    python -m bench.fp16 SRC_BUNDLE --store model_store [--name NAME] [--version N]
        [--image-dir ../shared/data/ebhi_seg] [--images 64]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bundle import BundleError, sha256_file, staging
from bundle.datasets import is_image
from service.imaging import decode_image, preprocess
from service.settings import REPO_ROOT, Settings
from service.store import Bundle, load_bundle

from .derived import copy_arguments, graph_outputs, publish_copy

MIN_ELEMENTS = 1024  # smaller tensors (biases, BatchNorm folded scales) stay float32: they are not the bytes
METHOD = "float16 initializers cast to float32 in the graph (ONNX Runtime folds the casts at load)"
# What a float16-weight copy may drift from its fp32 source on held-out images and still be published.
TOLERANCE = {"classification": {"probabilities_max_abs": 0.01, "top1_agreement_min": 0.99},
             "embedding": {"embedding_cosine_min": 0.999}}


def half_weights(src: Path, dst: Path) -> int:
    """Write `src` with its large float32 initializers stored as float16; returns how many were converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept, converted = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < MIN_ELEMENTS:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # the casts first: the graph stays topologically sorted
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return converted


def float_weights(src: Path, dst: Path) -> int:
    """Undo `half_weights`: each float16 initializer cast to float32 becomes the float32 initializer the cast
    gives (exact: float16 widens to float32 without rounding); returns how many. Tools that read weights from
    initializers (static quantization's per-channel weights) see them again."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    casts = [n for n in graph.node if n.op_type == "Cast" and len(n.input) == 1 and n.input[0] in halves
             and next(a.i for a in n.attribute if a.name == "to") == TensorProto.FLOAT]
    widened = [numpy_helper.from_array(numpy_helper.to_array(halves[c.input[0]]).astype(np.float32), c.output[0])
               for c in casts]
    dropped = {c.input[0] for c in casts}
    kept = [i for i in graph.initializer if i.name not in dropped] + widened
    del graph.initializer[:]
    graph.initializer.extend(kept)
    cast_outputs = {c.output[0] for c in casts}
    nodes = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in cast_outputs)]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return len(casts)


def parity(source: Path, copy: Path, images: np.ndarray, task: str) -> dict[str, float]:
    """The copy's outputs against the source's on `images`."""
    return compare(graph_outputs(source, images), graph_outputs(copy, images), task)


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], task: str) -> dict[str, float]:
    """Outputs `b` against reference outputs `a` of the same images, in the terms of `TOLERANCE`."""
    measured = {"images": float(len(a[next(iter(a))])),
                "outputs_max_abs": float(max(np.max(np.abs(a[k] - b[k])) for k in a))}
    if task == "classification":
        measured["probabilities_max_abs"] = float(np.max(np.abs(a["probabilities"] - b["probabilities"])))
        measured["top1_agreement"] = float(np.mean(a["probabilities"].argmax(1) == b["probabilities"].argmax(1)))
    else:
        u, v = a["embedding"], b["embedding"]
        cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
        measured["embedding_cosine_min"] = float(cos.min())
    return measured


def half_bundle(bundle: Bundle, images: np.ndarray, out_store: Path, name: str | None = None,
                version: int | None = None, note: str = "") -> Bundle:
    """Publish the float16-weight copy of `bundle` as `<out_store>/<name>/<version>`; BundleError when its
    measured parity breaks the tolerance (nothing is published then)."""
    name, version = name or bundle.name, version or bundle.version
    with staging(out_store, name, version) as staged:
        converted = half_weights(bundle.model_file, staged / "model.onnx")
        measured = parity(bundle.model_file, staged / "model.onnx", images, bundle.task)
        publish_copy(bundle, staged, out_store, name, version, {
            "precision": "float16", "source": bundle.ref, "source_sha256": sha256_file(bundle.model_file),
            "method": METHOD, "weights": f"float16 ({converted} tensors of >= {MIN_ELEMENTS} values)",
            "activations": "float32", "eval_source": note,
            "tolerance": TOLERANCE["classification" if bundle.task == "classification" else "embedding"],
            "measured": measured,
        })
    return load_bundle(Path(out_store) / name / str(version))


def main(argv: list[str] | None = None) -> int:
    p = copy_arguments(__doc__.split("\n\n")[0], "the fp32 bundle directory <store>/<name>/<version>")
    p.add_argument("--image-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "ebhi_seg",
                   help="real images the parity is measured on (any tissue the bundle may see)")
    p.add_argument("--images", type=int, default=64, help="how many, spread over the sorted folder")
    args = p.parse_args(argv)
    bundle = load_bundle(args.bundle)
    paths = sorted(q for q in args.image_dir.rglob("*") if is_image(q))
    if not paths:
        print(f"no images under {args.image_dir}", file=sys.stderr)
        return 2
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, min(args.images, len(paths))).astype(int)]
    max_pixels = Settings(model_store=args.bundle.parent.parent).max_image_pixels  # what the service decodes
    images = np.stack([preprocess(decode_image(q.read_bytes(), max_pixels=max_pixels, filename=q.name),
                                  bundle.preprocessing) for q in paths])
    note = f"{len(paths)} images spread over {args.image_dir.name}/"
    try:
        copy = half_bundle(bundle, images, args.store, args.name, args.version, note)
    except BundleError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"bundle": copy.ref, "path": str(copy.path),
                      "quantization": copy.manifest["graphs"]["classify"]["quantization"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
