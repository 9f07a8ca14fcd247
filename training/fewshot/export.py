"""Export a meta-trained embedding as an `embedding` bundle: the default model behind the service's /adapt.

The service computes prototypes with the bundle's `embedding` output and the squared Euclidean distance,
i.e. exactly ProtoNet's test-time rule, and it does not adapt the network to the support set. So what is
exported is the backbone whose `embed(x)` the method trained prototypes on (for the dual-attention method:
the meta-learned initial parameters, evaluated as `inner_steps_test=0`).

An embedding bundle carries `model.onnx` only (bundle.TASKS): a Grad-CAM needs class logits, and the
backbone's classifier head was never trained. Its `model_args` rebuild the backbone with the run's
`backbone_args` and `num_classes` the number of meta-training classes (the head is in no graph).
"""
from __future__ import annotations

import json
from pathlib import Path

from training.export import export_bundle

from .build import load_checkpoint

# Methods whose trained embedding is a prototype embedding (squared Euclidean to class means).
PROTOTYPE_METHODS = {"protonet", "dual_attention"}


def _embedding_description(cfg, net) -> dict:
    """What the `embedding` output is: the mean of the last feature map, or (a backbone with
    `embed_stages`) the L2-normalised means of those stages and of the last map, concatenated; with a
    taught pooling attention (`pool_attn_stages`), means weighted by it."""
    stages = list(cfg.backbone_args.get("embed_stages") or [])
    taught = list(getattr(net, "pool_attn_stages", ()))
    if not stages:
        return {"stages": ["features"], "pooling": "mean",
                "description": f"spatial mean of the {cfg.backbone} backbone's last feature map"}
    if not taught:
        return {"stages": [f"stage{s}" for s in stages] + ["features"], "pooling": "l2_mean+concat",
                "description": f"{cfg.backbone}: spatial means of stages {stages} and of the last feature map, "
                               "each L2-normalised, concatenated in that order (the last block is `features`)"}
    masks = sorted({f"{t.masks} {t.classes}" for t in cfg.train if t.masks})
    return {"stages": [f"stage{s}" for s in stages] + ["features"], "pooling": "taught_attention_l2_mean+concat",
            "description": f"{cfg.backbone}: means of stages {stages} and of the last feature map weighted by a "
                           f"spatial attention on stages {taught} (sigmoid ** "
                           f"{net.pool_attn.power:g}) taught by the masks of "
                           f"{'; '.join(masks)}, each L2-normalised, concatenated in that order"
                           + ("; then the plain spatial means of the same maps, the same way (embedding.parts names "
                              "the two halves; /adapt chooses per support set)" if net.pool_attn_keep_mean else "")
                           + "; pool_weights are the attention's weights on the grid of `features`"}


def export_embedding(run_dir, store, name: str, version: int | None = None, overrides: list[str] | None = None
                     ) -> Path:
    """`overrides` change what does not change the weights, e.g. `backbone_args.pool_attn_keep_mean=true` (the
    plain means beside the taught attention's, for /adapt to choose from); the run's metrics stay the run's."""
    run = Path(run_dir)
    method, cfg, ckpt = load_checkpoint(run / "checkpoint.pt", overrides=overrides)
    if cfg.method not in PROTOTYPE_METHODS:
        raise ValueError(f"a {cfg.method!r} run has no prototype embedding to serve; export one of "
                         f"{sorted(PROTOTYPE_METHODS)}")
    net = method.backbone.eval()
    metrics = {}
    eval_file = run / "eval.json"
    if eval_file.is_file():
        report = json.loads(eval_file.read_text())
        metrics["fewshot"] = {f"{r['test']}_{r['n_way']}way_{r['k_shot']}shot": {
            "accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": r["episodes"]} for r in report["results"]}
        if taught := report.get("pool_attention"):  # IoU of the attention's region against the experts' masks
            metrics["pool_attention_iou"] = {"train": (taught.get("train") or {}).get("train_iou"),
                                             **{name: t["iou"] for name, t in taught["tests"].items()}}
    classes = [c for split in cfg.train for c in split.classes]
    train_data = ckpt.get("train_data") or []
    # a machine's path is left out: `dataset` names the folder under the data directory
    train_data = [{k: v for k, v in d.items() if k != "root"} for d in
                  (train_data if isinstance(train_data, list) else [train_data])]
    return export_bundle(
        net, store, name, classes=classes, task="embedding",
        input_size=(cfg.image_size, cfg.image_size), mean=ckpt.get("mean"), std=ckpt.get("std"),
        metrics=metrics, version=version,
        model_args={**dict(ckpt.get("model_args") or {}), **cfg.backbone_args, "num_classes": len(classes)},
        embedding=_embedding_description(cfg, net),
        extra_manifest={
            "recipe": f"few-shot {cfg.method} on {cfg.backbone} {cfg.backbone_args}, "
                      + (f"pooling attention taught {cfg.attention_epochs} epochs, " if cfg.attention_epochs else "")
                      + f"meta-trained {cfg.episodes} episodes {cfg.n_way}-way {cfg.k_shot}-shot on "
                      + "; ".join(f"{split.dataset} {split.classes}" for split in cfg.train)
                      + (f"; exported with {list(overrides)} (metrics.fewshot: the run as trained)" if overrides else ""),
            "training": cfg.to_dict(),
            "split": {"description": "meta-train classes vs unseen test classes (class-disjoint); "
                                     "episodes keep patients/specimens apart where a class has several",
                      "train": train_data or None},
        },
    )
