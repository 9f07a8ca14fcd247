"""Episodic meta-training: one loop for every few-shot method."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training.distributed import World, average_gradients, init_world, shutdown
from training.engine import autocast, set_train_mode

from .attention import teach_pool_attention
from .bank import load_bank
from .build import build_method, normalisation, save_checkpoint
from .config import FewShotConfig


def episode_step(method, tasks, indices, mean, std, cfg: FewShotConfig, rng, world: World) -> list[tuple]:
    """Gradients of one meta-batch: this rank's episodes, each loss / meta_batch, then the mean over ranks.

    `tasks` holds one (bank, sampler) per training split; episode i comes from split i % len(tasks), so an
    episode never mixes datasets (a cross-dataset episode is solved by colour alone)."""
    stats = []
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for index in indices:
        bank, sampler = tasks[index % len(tasks)]
        ep = sampler.episode(index // len(tasks))
        sx = bank.batch(ep.support, mean, std, cfg.augment, rng, cfg.device).contiguous(memory_format=layout)
        qx = bank.batch(ep.query, mean, std, cfg.augment, rng, cfg.device).contiguous(memory_format=layout)
        sy = torch.as_tensor(ep.support_labels, device=cfg.device)
        qy = torch.as_tensor(ep.query_labels, device=cfg.device)
        with autocast(torch.device(cfg.device), cfg.device != "cpu", cfg.cpu_bf16):
            loss, logits = method.loss(sx, sy, qx, qy, cfg.n_way)
        (loss.float() / cfg.meta_batch).backward()
        stats.append((loss.item(), (logits.argmax(1) == qy).float().mean().item()))
    average_gradients(method, world)
    return stats


def meta_train(cfg: FewShotConfig, out_dir, banks=None, resume: bool = False) -> Path:
    """Meta-train `cfg.method` on the classes of `cfg.train`'s splits (`banks`: their images, loaded when
    None); writes checkpoint.pt and log.jsonl in `out_dir`.

    Under torchrun each rank takes its own episodes of every meta-batch (so a step sees meta_batch x
    world size episodes), gradients are averaged over ranks, and rank 0 alone writes. `last.pt`
    (weights, optimiser, step) is written at every log line, so `resume` continues from there.
    """
    world = init_world(cfg.device)
    try:
        return _meta_train(cfg, Path(out_dir), banks, resume, world)
    finally:
        shutdown(world)


def _meta_train(cfg: FewShotConfig, out: Path, banks, resume: bool, world: World) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    banks = banks or [load_bank(split, cfg.image_size) for split in cfg.train]
    tasks = [(bank, bank.sampler(cfg.n_way, cfg.k_shot, cfg.q_query, seed=cfg.seed)) for bank in banks]
    method = build_method(cfg)
    if cfg.init:
        from training.weights import load_init_weights

        load_init_weights(method.backbone, cfg.init)
    if cfg.trainable:
        # Only the named parts learn: the frozen early stages run without a graph and keep their pretrained
        # (generic, transferable) filters; the late, ImageNet-specific stages adapt.
        for name, p in method.backbone.named_parameters():
            p.requires_grad_(name.startswith(tuple(cfg.trainable)))
        if not any(p.requires_grad for p in method.backbone.parameters()):
            raise ValueError(f"trainable {cfg.trainable}: no backbone parameter starts with these prefixes")
    method = method.to(cfg.device)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    mean, std = normalisation(method)
    taught = None
    if cfg.attention_epochs:
        # the pooling attention learns where the labelled region is before any episode, with the backbone frozen
        taught = teach_pool_attention(method.backbone, banks, mean, std, epochs=cfg.attention_epochs,
                                      lr=cfg.attention_lr, seed=cfg.seed, log=sys.stdout if world.is_main else None)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed + world.rank)  # each rank its own augmentation draws
    first_step, elapsed = 0, 0.0
    if resume and (out / "last.pt").is_file():
        last = torch.load(out / "last.pt", map_location=cfg.device, weights_only=True)
        method.load_state_dict(last["state_dict"])
        opt.load_state_dict(last["optimizer"])
        first_step, elapsed = last["step"], last["seconds"]
    main = world.is_main
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = open(out / "log.jsonl", "a" if first_step else "w") if main else None
    if main and taught and not first_step:
        log.write(json.dumps({"episode": 0, "pool_attention": taught}) + "\n")
    start, losses, accs = time.time() - elapsed, [], []
    # freeze_bn keeps the backbone's pretrained statistics; a method's own new modules (the relation module's
    # BatchNorms) have none to keep and learn theirs
    set_train_mode(method, freeze_bn=False)
    set_train_mode(method.backbone, cfg.freeze_bn)
    per_step = cfg.meta_batch * world.size
    for step in range(first_step, cfg.episodes // per_step):
        # lr: step decay
        if cfg.lr_decay_every:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 ** (step * per_step // cfg.lr_decay_every)
        # forward / backward over a meta-batch of episodes (this rank's share), then one outer step
        opt.zero_grad(set_to_none=True)
        indices = [(step * cfg.meta_batch + b) * world.size + world.rank for b in range(cfg.meta_batch)]
        for loss, acc in episode_step(method, tasks, indices, mean, std, cfg, rng, world):
            losses.append(loss)
            accs.append(acc)
        opt.step()
        # log, and the resume point
        done = (step + 1) * per_step
        if main and (done % cfg.log_every < per_step or done == cfg.episodes):
            rec = {"episode": done, "loss": float(np.mean(losses)), "train_acc": float(np.mean(accs)),
                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - start, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            losses, accs = [], []
            torch.save({"state_dict": method.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                        "seconds": time.time() - start}, out / "last.pt")
    # checkpoint: config + backbone args + weights, enough to rebuild without the config file
    if main:
        save_checkpoint(out / "checkpoint.pt", method.cpu(), cfg, extra={
            "train_data": [bank.description for bank in banks],
            "shared_group_classes": sorted({c for _, sampler in tasks for c in sampler.shared_group_classes}),
            "train_seconds": round(time.time() - start, 1), "mean": list(mean), "std": list(std),
            "world_size": world.size, **({"pool_attention": taught} if taught else {})})
        log.close()
    return out / "checkpoint.pt"
