"""A copy of a classification bundle whose classify graph averages each image over flips of it.

The copy's model.onnx wraps the source's graph: the batch is stacked with its flipped views (along W, along
H, or both), run once, and `probabilities`, `logits` and `embedding` are averaged over the views; `features`,
which Grad-CAM explains, stay the image's own, so gradcam.onnx is kept as it is. A view costs one forward
pass, and that cost counts wherever the copy is measured (bench.raw, bench.accuracy, make bench).

The views are the image and one flip: the flip whose average has the best balanced accuracy on the bundle's
validation split (`--views` fixes them instead). Only the chosen views are scored on the test split. The copy
is published only when its outputs match the source's averaged over the same views (`TOLERANCE`); its
out-of-distribution threshold is calibrated again on the validation split (averaged logits score
differently) and its val and test metrics are measured again with the training code's metrics, the
source's single-view test figures kept beside them as `test_single_view`.

    python -m bench.tta SRC_BUNDLE --store model_store [--name NAME] [--version N]
        [--views identity,rot180] [--data-dir ../shared/data] [--recipe TEXT]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from bundle import FLIPS, BundleError, ood, staging
from bundle.datasets import default_data_dir, group_of
from service.imaging import decode_image, preprocess
from service.settings import Settings
from service.store import Bundle, load_bundle
from training.metrics import classification_metrics

from .accuracy import split_images
from .derived import copy_arguments, graph_outputs, publish_copy

AXES = {"identity": (), "hflip": (3,), "vflip": (2,), "rot180": (2, 3)}  # the NCHW axes each view reverses
assert tuple(AXES) == FLIPS
AVERAGED = ("probabilities", "logits", "embedding")  # every other output is taken from the first view
TOLERANCE = {"outputs_max_abs": 1e-3}  # the copy against the source averaged by numpy: float32 rounding only
INT64_MIN = -(2**63)


def flipped(x: np.ndarray, view: str) -> np.ndarray:
    return np.ascontiguousarray(np.flip(x, AXES[view])) if AXES[view] else x


def tta_graph(src: Path, dst: Path, views: list[str]) -> None:
    """Write `src` wrapped to average its outputs over `views` (the first one "identity")."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 15:  # Shape's start/end
        raise BundleError(f"{src}: opset {opset} < 15, export the source again")
    graph = model.graph
    image, outputs = graph.input[0].name, [o.name for o in graph.output]
    rename = {image: f"{image}__views", **{o: f"{o}__views" for o in outputs}}
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]

    consts: list = []

    def const(name: str, values: list[int]) -> str:
        consts.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    front, stacked = [], [image]
    for view in views[1:]:
        axes, out = AXES[view], f"{image}__{view}"
        front.append(helper.make_node("Slice", [
            image, const(f"{out}__starts", [-1] * len(axes)), const(f"{out}__ends", [INT64_MIN] * len(axes)),
            const(f"{out}__axes", list(axes)), const(f"{out}__steps", [-1] * len(axes))], [out], name=out))
        stacked.append(out)
    front.append(helper.make_node("Concat", stacked, [rename[image]], axis=0, name="tta_stack"))

    axis0, zero, views_first = const("tta_axis0", [0]), const("tta_zero", [0]), const("tta_views", [len(views), -1])
    back = [helper.make_node("Shape", [image], ["tta_batch"], start=0, end=1, name="tta_batch")]
    for o in outputs:
        many = rename[o]
        if o not in AVERAGED:
            back.append(helper.make_node("Slice", [many, zero, "tta_batch", axis0], [o], name=f"{o}__first_view"))
            continue
        mean = (helper.make_node("ReduceMean", [f"{o}__stacked", axis0], [o], keepdims=0, name=f"{o}__mean")
                if opset >= 18 else
                helper.make_node("ReduceMean", [f"{o}__stacked"], [o], axes=[0], keepdims=0, name=f"{o}__mean"))
        back += [helper.make_node("Shape", [many], [f"{o}__rest"], start=1, name=f"{o}__rest"),
                 helper.make_node("Concat", [views_first, f"{o}__rest"], [f"{o}__shape"], axis=0, name=f"{o}__shape"),
                 helper.make_node("Reshape", [many, f"{o}__shape"], [f"{o}__stacked"], name=f"{o}__stacked"),
                 mean]  # [views * N, ...] -> [views, N, ...] -> mean over the views
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(front + nodes + back)
    graph.initializer.extend(consts)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def views_outputs(model_file: Path, images: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The single-view graph's outputs on every flip of `images`."""
    return {view: graph_outputs(model_file, flipped(images, view)) for view in FLIPS}


def averaged(per_view: dict[str, dict[str, np.ndarray]], views: list[str]) -> dict[str, np.ndarray]:
    out = dict(per_view[views[0]])
    out.update({k: np.mean([per_view[v][k] for v in views], axis=0) for k in AVERAGED if k in out})
    return out


def choose_views(per_view: dict[str, dict[str, np.ndarray]], y: np.ndarray) -> tuple[list[str], dict[str, float]]:
    """The image and the flip whose average scores the best balanced accuracy on (`per_view`, `y`)."""
    scores = {"+".join(views): float(balanced_accuracy_score(y, averaged(per_view, views)["probabilities"].argmax(1)))
              for views in (["identity", flip] for flip in FLIPS[1:])}
    scores["identity"] = float(balanced_accuracy_score(y, per_view["identity"]["probabilities"].argmax(1)))
    best = max((k for k in scores if k != "identity"), key=lambda k: scores[k])  # the first of ties, in FLIPS order
    return best.split("+"), scores


def _split(bundle: Bundle, part: str, data_dir: Path, max_pixels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    paths, labels, _ = split_images(bundle.path, data_dir, part)
    if not paths:
        raise BundleError(f"{bundle.ref}: its split.json has no {part} images")
    x = np.stack([preprocess(decode_image(p.read_bytes(), max_pixels=max_pixels, filename=p.name), bundle.preprocessing)
                  for p in paths])
    return x, np.array([bundle.classes.index(c) for c in labels]), [group_of(p.name) for p in paths]


def tta_bundle(bundle: Bundle, out_store: Path, data_dir: Path, *, name: str | None = None,
               version: int | None = None, views: list[str] | None = None, recipe: str | None = None) -> Bundle:
    """Publish the averaging copy of `bundle` as `<out_store>/<name>/<version>`; BundleError (nothing
    published) when the bundle is not a classifier with a split, or the copy breaks `TOLERANCE`."""
    if bundle.task != "classification" or not (bundle.path / "split.json").is_file():
        raise BundleError(f"{bundle.ref}: test-time augmentation needs a classification bundle with a split.json")
    name, version = name or bundle.name, version or bundle.version
    max_pixels = Settings(model_store=out_store).max_image_pixels
    x_val, y_val, g_val = _split(bundle, "val", data_dir, max_pixels)
    per_view = views_outputs(bundle.model_file, x_val)
    chosen, selection = choose_views(per_view, y_val)
    views = views or chosen
    manifest = json.loads((bundle.path / "manifest.json").read_text(encoding="utf-8"))
    with staging(out_store, name, version) as staged:
        tta_graph(bundle.model_file, staged / "model.onnx", views)
        copy_val, want = graph_outputs(staged / "model.onnx", x_val), averaged(per_view, views)
        measured = {"images": float(len(x_val)),
                    "outputs_max_abs": float(max(np.max(np.abs(copy_val[k] - want[k])) for k in want))}
        if measured["outputs_max_abs"] > TOLERANCE["outputs_max_abs"]:
            raise BundleError(f"the averaging graph drifts {measured} from the source averaged by numpy")
        x_test, y_test, g_test = _split(bundle, "test", data_dir, max_pixels)
        copy_test = graph_outputs(staged / "model.onnx", x_test)
        metrics = dict(manifest.get("metrics", {}))
        metrics.update(val=classification_metrics(y_val, copy_val["probabilities"], list(bundle.classes), g_val),
                       test=classification_metrics(y_test, copy_test["probabilities"], list(bundle.classes), g_test),
                       test_single_view=metrics.get("test"))
        fields = {"metrics": metrics}
        was = bundle.spec.out_of_distribution if bundle.spec is not None else None
        if was is not None:
            scores = ood.score(was.score, copy_val["logits"], was.temperature)
            fields["out_of_distribution"] = ood.calibrate(scores, was.flag_rate, name=was.score,
                                                          temperature=was.temperature)
        if recipe:
            fields["recipe"] = recipe
        tta = {"views": views, "source": bundle.ref, "measured": measured, "tolerance": TOLERANCE,
               "chosen_on": None if views != chosen else f"val ({len(x_val)} images, balanced accuracy)",
               "selection": selection}
        publish_copy(bundle, staged, out_store, name, version, None, classify={"test_time_augmentation": tta},
                     **fields)
    return load_bundle(Path(out_store) / name / str(version))


def main(argv: list[str] | None = None) -> int:
    p = copy_arguments(__doc__.split("\n\n")[0], "the single-view bundle directory <store>/<name>/<version>")
    p.add_argument("--views", default=None, help=f"comma-separated, the first 'identity', from {FLIPS} "
                                                 "(default: identity and the best flip on the validation split)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding the dataset (default: ../shared/data)")
    p.add_argument("--recipe", default=None, help="replaces the source's recipe text")
    args = p.parse_args(argv)
    views = args.views.split(",") if args.views else None
    if views and (views[0] != "identity" or not set(views) <= set(FLIPS) or len(set(views)) != len(views)):
        print(f"--views must start with identity and name distinct views of {FLIPS}", file=sys.stderr)
        return 2
    try:
        copy = tta_bundle(load_bundle(args.bundle), args.store, args.data_dir or default_data_dir(), name=args.name,
                          version=args.version, views=views, recipe=args.recipe)
    except BundleError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    classify = copy.manifest["graphs"]["classify"]
    print(json.dumps({"bundle": copy.ref, "path": str(copy.path), "test_time_augmentation": classify["test_time_augmentation"],
                      "test_balanced_accuracy": copy.manifest["metrics"]["test"]["balanced_accuracy"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
