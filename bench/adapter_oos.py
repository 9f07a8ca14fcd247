"""How often /adapt's out-of-support flag fires: on queries of the adapter's own classes, of other tissue,
and of glass and blur. In-process (the service's own imaging, ONNX Runtime session and adapter code), no
HTTP: every image is embedded once, then episodes are numpy.

    python -m bench.adapter_oos [--model model_store/ebhi_fewshot_dual_attention/1] [--episodes 50]
        [--task ebhi_unseen|breakhis_subtypes]

Episodes (`--task ebhi_unseen`, the default): 3-way K-shot on EBHI-Seg's classes the default embedding never
saw (high-grade IN, normal, serrated adenoma), support and queries from different specimens. Query kinds: own
(other specimens of the adapter's classes), ebhi_other (EBHI's other classes: same organ, other diagnosis),
breakhis (breast tissue: another organ and lab), glass (near-white images with sensor noise), blur (own
queries under a Gaussian blur of radius 8 px at 224 px scale). `--task breakhis_subtypes`: 5-way on the
BreakHis subtypes with several patients (ductal, fibroadenoma, mucinous, papillary, tubular adenoma), support
and queries from different patients (numeric root of the id): another organ than the embedding was taught on;
its kinds are own, breakhis_other (adenosis, lobular carcinoma, phyllodes tumour), ebhi, glass and blur.
Prints one JSON line per shot count: the query accuracy of
the head /adapt chooses (auto) and of each head forced, and the flag rates. `--augment dihedral` builds
the adapters as /adapt does with `augment=dihedral`: each support image's 8 rotations/flips as shots;
`--tta dihedral` classifies each query as /classify does with an adapter and `tta=dihedral`: the mean of the
adapter's probabilities over the query's 8 views (the out-of-support flag stays the image's own view's).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bundle.datasets import group_of
from service.adapters import HEADS, new_adapter
from service.imaging import preprocess
from service.inference import DIHEDRAL
from service.runtime import ModelRuntime
from service.settings import REPO_ROOT, Settings
from service.store import load_bundle

UNSEEN = ("high_grade_in", "normal", "serrated_adenoma")
OTHER = ("adenocarcinoma", "low_grade_in", "polyp")
SUBTYPES = ("ductal_carcinoma", "fibroadenoma", "mucinous_carcinoma", "papillary_carcinoma", "tubular_adenoma")
SINGLE_PATIENT = ("adenosis", "lobular_carcinoma", "phyllodes_tumor")


# task -> (dataset, the adapter's classes, same-organ other classes' kind and classes, other organ's kind and dataset)
TASKS = {"ebhi_unseen": ("ebhi_seg", UNSEEN, ("ebhi_other", OTHER), ("breakhis", "breakhis_200x")),
         "breakhis_subtypes": ("breakhis_200x", SUBTYPES, ("breakhis_other", SINGLE_PATIENT), ("ebhi", "ebhi_seg"))}


def _fit_and_score(bundle, *, support: np.ndarray, labels: list[str], groups: list[int], q_views: np.ndarray,
                   truth: list[str], cut: slice = slice(None), **options):
    """An adapter on support[:, cut], as /adapt builds it, and its accuracy on the queries (queries, views, D):
    the class of each query's probabilities averaged over its views."""
    fitted = new_adapter(name=None, model=bundle.name, version=bundle.version, embeddings=support[:, cut],
                         labels=labels, groups=groups, distance=bundle.embedding_distance,
                         temperature=bundle.embedding_temperature, **options)
    views = q_views[..., cut]
    probs = fitted.classify(views.reshape(-1, views.shape[-1])).reshape(*views.shape[:2], -1)
    predicted = np.asarray(fitted.classes)[probs.mean(axis=1).argmax(1)]
    return fitted, float((predicted == np.asarray(truth)).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "model_store" / "ebhi_fewshot_dual_attention" / "1")
    p.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--per-class", type=int, default=60, help="images read per class (sorted, spread over specimens)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--task", choices=sorted(TASKS), default="ebhi_unseen", help="which classes the adapters learn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", choices=("none", "dihedral"), default="none", help="support views, as /adapt's")
    p.add_argument("--tta", choices=("none", "dihedral"), default="none",
                   help="query views, as /classify's tta with an adapter: probabilities averaged over the 8 views")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    bundle = load_bundle(args.model)
    runtime = ModelRuntime(bundle, Settings(model_store=args.model.parent.parent, intra_op_threads=1))

    def embed(images: list[Image.Image]) -> np.ndarray:
        rows = []
        for start in range(0, len(images), 32):
            batch = np.stack([preprocess(img, bundle.preprocessing) for img in images[start : start + 32]])
            rows.append(runtime.run(batch)["embedding"])
        return np.concatenate(rows)

    def read(paths: list[Path]) -> list[Image.Image]:
        return [Image.open(q).convert("RGB") for q in paths]

    def pick(folder: Path, n: int) -> list[Path]:
        paths = sorted(folder.glob("*.png"))
        return [paths[i] for i in np.linspace(0, len(paths) - 1, min(n, len(paths))).astype(int)]

    dataset, classes, (same_organ, same_organ_classes), (other_organ, other_dataset) = TASKS[args.task]
    own_paths = {c: pick(args.data / dataset / c, args.per_class) for c in classes}
    own = {c: embed(read(ps)) for c, ps in own_paths.items()}
    views = DIHEDRAL if args.augment == "dihedral" else (None,)
    # (images, 8, D): every dihedral view of every image of the unseen classes, when support or queries use them
    dihedral = {c: embed([img if t is None else img.transpose(t) for img in read(ps) for t in DIHEDRAL]).reshape(
        len(ps), len(DIHEDRAL), -1) for c, ps in own_paths.items()} if "dihedral" in (args.augment, args.tta) else {}
    own_views = {c: dihedral[c] if len(views) > 1 else own[c][:, None] for c in own_paths}
    query_views = {c: dihedral[c] if args.tta == "dihedral" else own[c][:, None] for c in own_paths}
    blur = {c: embed([img.filter(ImageFilter.GaussianBlur(8 * img.width / 224)) for img in read(ps)])
            for c, ps in own_paths.items()}
    other = np.concatenate([embed(read(pick(args.data / dataset / c, args.per_class))) for c in same_organ_classes])
    organ = np.concatenate([embed(read(pick(d, 20))) for d in sorted((args.data / other_dataset).iterdir())
                            if d.is_dir()])
    glass = embed([Image.fromarray(np.clip(235 + rng.normal(0, 6, (224, 224, 3)), 0, 255).astype(np.uint8))
                   for _ in range(40)])
    print(f"embedded: own {sum(len(v) for v in own.values())}, {same_organ} {len(other)}, {other_organ} "
          f"{len(organ)}, glass {len(glass)}", file=sys.stderr)

    for shots in args.shots:
        rates: dict[str, list[float]] = {k: [] for k in ("own", same_organ, other_organ, "glass", "blur")}
        accuracy, heads, parts, by_part = [], {}, {}, {}
        by_head: dict[str, list[float]] = {h: [] for h in HEADS}  # each head forced: what choosing adds
        for _ in range(args.episodes):
            support, labels, groups, queries, query_sets, truth, blurred = [], [], [], [], [], [], []
            for c in classes:
                specimens = sorted({group_of(q.name, dataset) for q in own_paths[c]})
                order = rng.permutation(len(specimens))
                used: set[str] = set()
                idx: list[int] = []
                for j in order:  # whole specimens into the support until it has its shots
                    rows = [i for i, q in enumerate(own_paths[c]) if group_of(q.name, dataset) == specimens[j]]
                    idx += rows[: shots - len(idx)]
                    used.add(specimens[j])
                    if len(idx) >= shots:
                        break
                rest = [i for i, q in enumerate(own_paths[c]) if group_of(q.name, dataset) not in used]
                support.append(own_views[c][idx].reshape(len(idx) * len(views), -1))
                groups += [len(groups) // len(views) + g for g in range(len(idx)) for _ in views]
                labels += [c] * (len(idx) * len(views))
                queries.append(own[c][rest])
                query_sets.append(query_views[c][rest])
                truth += [c] * len(rest)
                blurred.append(blur[c][rest])
            q, support_emb = np.concatenate(queries), np.concatenate(support)
            q_views = np.concatenate(query_sets)  # (queries, views, D)
            scored = {"support": support_emb, "labels": labels, "groups": groups, "q_views": q_views, "truth": truth}
            augmentation = None if args.augment == "none" else args.augment
            for head in ("auto", *HEADS):
                fitted, acc = _fit_and_score(bundle, **scored, head=head, parts=bundle.embedding_parts,
                                             augmentation=augmentation)
                (accuracy if head == "auto" else by_head[head]).append(acc)
                if head == "auto":
                    # each part forced, as if it were the whole embedding: what choosing between them adds
                    for name, span in ({**bundle.embedding_parts, "whole": None} if bundle.embedding_parts else {}).items():
                        by_part.setdefault(name, []).append(
                            _fit_and_score(bundle, **scored, cut=slice(*span) if span else slice(None))[1])
                    adapter = fitted
                    heads[adapter.head] = heads.get(adapter.head, 0) + 1
                    part = adapter.embedding_part or "whole"
                    parts[part] = parts.get(part, 0) + 1
            for kind, emb in (("own", q), (same_organ, other), (other_organ, organ), ("glass", glass),
                              ("blur", np.concatenate(blurred))):
                flags, _ = adapter.outside(emb)
                rates[kind].append(float(np.mean(flags)))
        print(json.dumps({"bundle": bundle.ref, "task": args.task, "way": len(classes), "shots": shots,
                          "episodes": args.episodes,
                          **({"augment": args.augment} if args.augment != "none" else {}),
                          **({"tta": args.tta} if args.tta != "none" else {}),
                          "accuracy": round(float(np.mean(accuracy)), 3), "heads": heads,
                          **({"embedding_parts": parts, "accuracy_by_part": {
                              k: round(float(np.mean(v)), 3) for k, v in by_part.items()}} if bundle.embedding_parts
                             else {}),
                          "accuracy_by_head": {h: round(float(np.mean(v)), 3) for h, v in by_head.items()},
                          "flagged": {k: round(float(np.mean(v)), 3) for k, v in rates.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
