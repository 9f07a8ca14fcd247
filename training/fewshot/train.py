"""Episodic meta-training: one loop for every few-shot method."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .bank import load_bank
from .build import build_method, normalisation, save_checkpoint
from .config import FewShotConfig


def meta_train(cfg: FewShotConfig, out_dir, bank=None) -> Path:
    """Meta-train `cfg.method` on `cfg.train`'s classes; writes checkpoint.pt and log.jsonl in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    bank = bank or load_bank(cfg.train, cfg.image_size)
    sampler = bank.sampler(cfg.n_way, cfg.k_shot, cfg.q_query, seed=cfg.seed)
    method = build_method(cfg)
    if cfg.init:
        from training.weights import load_init_weights

        load_init_weights(method.backbone, cfg.init)
    method = method.to(cfg.device)
    mean, std = normalisation(method)
    opt = torch.optim.Adam(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = open(out / "log.jsonl", "w")
    start, losses, accs = time.time(), [], []
    method.train()
    for step in range(cfg.episodes // cfg.meta_batch):
        # lr: step decay
        if cfg.lr_decay_every:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 ** (step * cfg.meta_batch // cfg.lr_decay_every)
        # forward / backward over a meta-batch of episodes, then one outer step
        opt.zero_grad(set_to_none=True)
        for b in range(cfg.meta_batch):
            ep = sampler.episode(step * cfg.meta_batch + b)
            sx = bank.batch(ep.support, mean, std, cfg.augment, rng, cfg.device)
            qx = bank.batch(ep.query, mean, std, cfg.augment, rng, cfg.device)
            sy = torch.as_tensor(ep.support_labels, device=cfg.device)
            qy = torch.as_tensor(ep.query_labels, device=cfg.device)
            loss, logits = method.loss(sx, sy, qx, qy, cfg.n_way)
            (loss / cfg.meta_batch).backward()
            losses.append(loss.item())
            accs.append((logits.argmax(1) == qy).float().mean().item())
        opt.step()
        # log
        done = (step + 1) * cfg.meta_batch
        if done % cfg.log_every < cfg.meta_batch or done == cfg.episodes:
            rec = {"episode": done, "loss": float(np.mean(losses)), "train_acc": float(np.mean(accs)),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - start, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            losses, accs = [], []
    # checkpoint: config + backbone args + weights, enough to rebuild without the config file
    save_checkpoint(out / "checkpoint.pt", method.cpu(), cfg, extra={
        "train_data": bank.description, "shared_group_classes": sampler.shared_group_classes,
        "train_seconds": round(time.time() - start, 1), "mean": list(mean), "std": list(std)})
    log.close()
    return out / "checkpoint.pt"
