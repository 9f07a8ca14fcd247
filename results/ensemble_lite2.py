"""Round 12: the two Lite2 TAD networks of round 11 (CBAM and its plain twin) as one equal-weight ensemble.

One view each, so two forward passes per image: what the served two-view graph costs. Fixed before scoring.
Round 9's fold-0 CBAM run kept no checkpoint, so every CBAM member is its exported single-view bundle (fold 0:
`ebhi_cbam_efficientnet_lite2/1`, restored from git into runs/scratch/store by results/commands.sh) run in ONNX
Runtime; the plain members are their checkpoints, evaluated as training evaluates them. Both score the same test
images (checked), with the training code's metrics.

    .venv/bin/python results/ensemble_lite2.py > results/supervised/cv_tad_lite2/ensemble.json
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.accuracy import split_images
from service.imaging import decode_image, preprocess
from service.store import load_bundle
from training.evaluate import run_logits
from training.metrics import classification_metrics, probabilities

DATA = Path("../shared/data")
CBAM = ["runs/scratch/store/ebhi_cbam_efficientnet_lite2/1",
        *[f"runs/cv_tad/store/ebhi_tad_cbam_efficientnet_lite2_fold{k}/1" for k in range(1, 5)]]
PLAIN = [f"runs/cv_tad/ebhi/tad_efficientnet_lite2/fold{k}" for k in range(5)]


def bundle_probabilities(path: Path) -> tuple[np.ndarray, list[tuple[str, str]]]:
    bundle = load_bundle(path)
    paths, _, _ = split_images(path, DATA)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.stack([preprocess(decode_image(p.read_bytes(), max_pixels=10**8), bundle.preprocessing) for p in paths])
    name = session.get_inputs()[0].name
    probs = np.concatenate([session.run(["probabilities"], {name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])
    return probs, [(p.parent.name, p.name) for p in paths]


folds = []
for k, (cbam, plain) in enumerate(zip(CBAM, PLAIN, strict=True)):
    p_cbam, keys = bundle_probabilities(Path(cbam))
    _, _, split, logits_of = run_logits(plain)
    logits, labels = logits_of("test")
    order = {(s.path.parent.name, s.path.name): i for i, s in enumerate(split.test)}
    if sorted(order) != sorted(keys):
        raise SystemExit(f"fold {k}: the two members test different images")
    rows = [order[key] for key in keys]
    p_plain, y = probabilities(logits)[rows], np.asarray(labels)[rows]
    groups = [split.test[i].group for i in rows]
    classes = split.classes
    folds.append({name: classification_metrics(y, p, classes, groups=groups)["balanced_accuracy"]
                  for name, p in (("cbam", p_cbam), ("plain", p_plain), ("ensemble", (p_cbam + p_plain) / 2))})
summary = {name: {"mean": float(np.mean([f[name] for f in folds])), "std": float(np.std([f[name] for f in folds]))}
           for name in folds[0]}
print(json.dumps({"balanced_accuracy_per_fold": folds, "balanced_accuracy": summary,
                  "members": {"cbam": CBAM, "plain": PLAIN}}, indent=1))
