"""Few-shot evaluation, the same for every method: mean query accuracy over many test episodes with a 95%
confidence interval (1.96 standard errors, the convention of the few-shot literature), written as JSON and a
markdown table.

Episodes come from `EpisodeSampler` with a fixed seed, so every method is scored on exactly the same tasks.
Methods whose test-time prediction is a fixed function of per-image encodings (ProtoNet, the Relation
Network, the dual-attention embedding without test-time adaptation) encode each test image once; with
BatchNorm in eval mode that gives the same numbers as encoding per episode, only faster. Methods that adapt
to the support set (MAML, the dual-attention inner loop) run per episode.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .attention import attention_iou
from .bank import ImageBank, load_bank
from .build import load_checkpoint, normalisation
from .methods import FewShotMethod

EVAL_SEED = 12345  # test episodes are the same for every run, whatever its training seed


def _encode_all(method: FewShotMethod, bank: ImageBank, mean, std, device: str, batch: int = 128) -> torch.Tensor:
    out = []
    for i in range(0, len(bank.labels), batch):
        out.append(method.encode(bank.batch(range(i, min(i + batch, len(bank.labels))), mean, std, device=device)))
    return torch.cat(out)


@torch.no_grad()
def evaluate_method(method: FewShotMethod, bank: ImageBank, n_way: int, k_shot: int, q_query: int,
                    episodes: int = 600, seed: int = EVAL_SEED, mean=None, std=None, device: str = "cpu") -> dict:
    """Accuracy over `episodes` N-way K-shot test episodes drawn from `bank`."""
    if mean is None or std is None:
        mean, std = normalisation(method)
    method.eval()
    sampler = bank.sampler(n_way, k_shot, q_query, seed=seed)
    encoded = _encode_all(method, bank, mean, std, device) if method.encodes_independently() else None
    accs, disjoint = [], []
    for i in range(episodes):
        ep = sampler.episode(i)
        sy = torch.as_tensor(ep.support_labels, device=device)
        qy = torch.as_tensor(ep.query_labels, device=device)
        if encoded is not None:
            logits = method.predict_encoded(encoded[ep.support], sy, encoded[ep.query], n_way)
        else:
            logits = method.predict(bank.batch(ep.support, mean, std, device=device), sy,
                                    bank.batch(ep.query, mean, std, device=device), n_way)
        accs.append((logits.argmax(1) == qy).float().mean().item())
        disjoint.append(np.mean(ep.group_disjoint))
    accs = np.asarray(accs)
    return {
        "accuracy": float(accs.mean()),
        "ci95": float(1.96 * accs.std(ddof=1) / math.sqrt(len(accs))) if len(accs) > 1 else float("nan"),
        "episodes": episodes, "n_way": n_way, "k_shot": k_shot, "q_query": q_query, "seed": seed,
        "chance": 1.0 / n_way,
        "classes": list(bank.classes),
        # Classes whose support and query had to share a patient/specimen (a single-group class).
        "shared_group_classes": sampler.shared_group_classes,
        "group_disjoint_fraction": float(np.mean(disjoint)),
    }


def evaluate_run(run_dir, shots=None, episodes: int | None = None, device: str = "cpu",
                 banks: dict | None = None, overrides: list[str] | None = None, label: str = "",
                 tests: list[str] | None = None) -> dict:
    """Evaluate a trained run on each of its config's test sets at each shot; writes eval{label}.json/.md.

    `overrides` (`key=value`, as for training) change test-time settings of the method, e.g.
    `method_args.inner_steps_test=0`; `label` then names the variant in the table and in the file names.
    `tests` restricts the evaluation to the named test sets of the config.
    """
    run = Path(run_dir)
    method, cfg, ckpt = load_checkpoint(run / "checkpoint.pt", device, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mean, std = ckpt.get("mean"), ckpt.get("std")
    shots = list(shots or cfg.eval_shots)
    episodes = episodes or cfg.eval_episodes
    unknown = sorted(set(tests or []) - {t.name for t in cfg.tests})
    if unknown:
        raise ValueError(f"test sets {unknown} are not in the run's config: {[t.name for t in cfg.tests]}")
    results, attention = [], {}
    for test in [t for t in cfg.tests if not tests or t.name in tests]:
        bank = (banks or {}).get(test.name) or load_bank(test, cfg.image_size)
        if bank.masks is not None and getattr(method.backbone, "pool_attn", None) is not None:
            # the test classes' masks only score the taught attention; no prediction reads them
            attention[test.name] = attention_iou(method.backbone, bank, mean, std)
        for k in shots:
            r = evaluate_method(method, bank, cfg.n_way, k, test.q_query, episodes, mean=mean, std=std,
                                device=device)
            r.update(test=test.name, dataset=test.dataset)
            results.append(r)
            print(f"{cfg.name}{label} {test.name} {k}-shot: {100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}",
                  flush=True)
    report = {"run": str(run), "name": cfg.name + label, "overrides": list(overrides or []), "method": cfg.method, "backbone": cfg.backbone,
              "backbone_args": cfg.backbone_args, "method_args": cfg.method_args,
              "train": ckpt.get("train_data"), "train_seconds": ckpt.get("train_seconds"), "results": results,
              **({"pool_attention": {"train": ckpt.get("pool_attention"), "tests": attention}} if attention else {})}
    stem = eval_stem(label)
    (run / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (run / f"{stem}.md").write_text(markdown_table([report]))
    return report


def eval_stem(label: str = "") -> str:
    """File stem of an evaluation variant: eval.json, or eval_<label>.json with a safe label."""
    return "eval" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def markdown_table(reports: list[dict]) -> str:
    """Rows: run names; columns: each test set at each shot; cells: accuracy % +- 95% CI."""
    columns: list[tuple[str, int]] = []
    for rep in reports:
        for r in rep["results"]:
            if (r["test"], r["k_shot"]) not in columns:
                columns.append((r["test"], r["k_shot"]))
    rows: dict[str, dict] = {}
    for rep in reports:
        row = rows.setdefault(rep["name"], {})
        for r in rep["results"]:
            row[(r["test"], r["k_shot"])] = f"{100 * r['accuracy']:.1f} ± {100 * r['ci95']:.1f}"
    head = "| method | " + " | ".join(f"{t} {k}-shot" for t, k in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(row.get(c, "–") for c in columns) + " |")
    notes = sorted({(r["test"], c) for rep in reports for r in rep["results"] for c in r["shared_group_classes"]})
    text = "\n".join(lines) + "\n"
    if reports and reports[0]["results"]:
        r0 = reports[0]["results"][0]
        counts: dict[str, set] = {}
        for rep in reports:  # one row may join several runs (one per test column)
            counts.setdefault(rep["name"], set()).update(r["episodes"] for r in rep["results"])
        if len({r["episodes"] for rep in reports for r in rep["results"]}) == 1:
            episodes = f"{r0['episodes']} test episodes per cell"
        else:  # the first episodes of a seed are the same tasks, so a shorter run is scored on a subset
            episodes = "test episodes per cell: " + ", ".join(
                f"{name} {'/'.join(map(str, sorted(c)))}" for name, c in counts.items())
        text += (f"\n{r0['n_way']}-way, {episodes}, mean query accuracy (%) "
                 f"± 95% CI; chance {100 * r0['chance']:.1f}%.\n")
    if notes:
        text += ("Support and query share the single patient/specimen of: "
                 + ", ".join(f"{c} ({t})" for t, c in notes) + ".\n")
    return text
