"""Supervised training of one network from a TrainConfig: data -> split -> loop -> best checkpoint.

The run directory gets `config.json`, `split.json`, `data_report.json`, `checkpoint.pt` (the best
validation epoch), `last.pt` (for --resume), `history.json`, then `evaluate` adds `metrics.json`
and the plots. Checkpoints are plain dicts of tensors and built-in types, loadable with
`torch.load(..., weights_only=True)`, and carry `architecture` + `model_args` + `config`, so
`models.create_model(ckpt["architecture"], **ckpt["model_args"])` rebuilds the network.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import models
from training.config import TrainConfig, save_config
from training.distributed import DataParallelForward, World, barrier, init_world, shutdown
from training.engine import autocast, pick_device, predict, seed_everything, set_train_mode, to_device
from training.loaders import class_counts, eval_loader, make_loaders
from training.losses import build_criterion
from training.metrics import classification_metrics, probabilities
from training.probe import fit_linear_probe
from training.splits import Split, load_split, prepare_split
from training.weights import freeze_pretrained, load_init_weights

# ----------------------------------------------------------------------------- loss weights


def class_weights(cfg: TrainConfig, split: Split) -> torch.Tensor | None:
    """Inverse-frequency weights, n / (k * n_c), so every class carries the same total weight."""
    if cfg.imbalance != "weights":
        return None
    counts = class_counts(split.train, len(split.classes)).astype(np.float64)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


# ----------------------------------------------------------------------------- model and optimiser


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[torch.nn.Module, dict]:
    model_args = dict(cfg.model_args, num_classes=num_classes)
    return models.create_model(cfg.model, **model_args), model_args


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adamw, adam or sgd")


def get_lr(cfg: TrainConfig, epoch: int) -> float:
    """Linear warmup from lr/10, then cosine decay to lr/100 (or constant)."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (0.1 + 0.9 * epoch / max(cfg.warmup_epochs, 1))
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "cosine":
        raise ValueError(f"unknown schedule {cfg.schedule!r}; use cosine or constant")
    t = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


# ----------------------------------------------------------------------------- one pass


def train_step(forward, model, batch, criterion, optimizer, scaler, cfg, device, epoch: int):
    """One forward / backward / update; `forward` is the model itself, or its DDP route on several ranks."""
    with autocast(device, cfg.amp, cfg.cpu_bf16):
        out = criterion(forward, batch, epoch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return out


def train_one_epoch(model, loader, criterion, optimizer, scaler, cfg, device, epoch: int, ema=None,
                    forward=None) -> dict:
    # a probe keeps the pretrained BatchNorm statistics too: it must not shift the features it reads
    set_train_mode(model, cfg.freeze_bn or cfg.freeze_pretrained)
    total, correct, seen, parts = 0.0, 0, 0, {}
    t0 = time.time()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2, disable=None)  # off when not a TTY
    for batch in bar:
        batch = to_device(batch, device, cfg.channels_last)
        out = train_step(forward or model, model, batch, criterion, optimizer, scaler, cfg, device, epoch)
        if ema is not None:
            ema.update_parameters(model)
        n = len(batch["label"])
        total += out.loss.item() * n
        correct += (out.logits.argmax(1) == batch["label"]).sum().item()
        seen += n
        for k, v in out.parts.items():
            parts[k] = parts.get(k, 0.0) + v * n
        bar.set_postfix(loss=f"{total / seen:.3f}")
    return {"train_loss": total / max(seen, 1), "train_acc": correct / max(seen, 1),
            "train_images_per_s": seen / max(time.time() - t0, 1e-9),
            **{f"train_{k}": v / max(seen, 1) for k, v in parts.items()}}


def validate(model, val_loader, device, cfg: TrainConfig, split: Split) -> dict:
    """The validation metrics, plus the loss and the short names the history logs."""
    logits, labels = predict(model, val_loader, device, cfg.amp, cfg.cpu_bf16, channels_last=cfg.channels_last)
    val = classification_metrics(labels, probabilities(logits), split.classes)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    return val | {"val_loss": float(loss), "val_acc": val["accuracy"], "val_bal_acc": val["balanced_accuracy"]}


def make_ema(cfg: TrainConfig, model: torch.nn.Module):
    """Exponential moving average of weights and buffers (BatchNorm statistics follow the average)."""
    if cfg.ema_decay <= 0:
        return None
    if not cfg.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)


def checkpoint_dict(model, model_args, cfg, split, epoch, history, best, extra=None) -> dict:
    ckpt = {
        "model": model.state_dict(),
        "architecture": cfg.model,
        "model_args": model_args,
        "config": cfg.to_dict(),
        "classes": list(split.classes),
        "preprocessing": {"size": cfg.image_size, "mean": list(cfg.mean), "std": list(cfg.std)},
        "epoch": epoch,
        "best_val": best,
        "history": history,
    }
    return ckpt | (extra or {})


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, out_dir, resume: bool = False) -> dict:
    out_dir = Path(out_dir)
    device = pick_device(cfg)
    world = init_world(device.type)  # one process unless started by torchrun
    try:
        return _train(cfg, out_dir, resume, device, world)
    finally:
        shutdown(world)


def _train(cfg: TrainConfig, out_dir: Path, resume: bool, device: torch.device, world: World) -> dict:
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if resume and (out_dir / "split.json").is_file():
        cfg = replace(cfg, split_file=str(out_dir / "split.json"))  # resume on the very same split
    # rank 0 makes and writes the split; the other ranks read back the very same file
    if world.is_main:
        save_config(cfg, out_dir / "config.json")
        split = prepare_split(cfg, out_dir)
    barrier(world)
    if not world.is_main:
        split = load_split(out_dir / "split.json", root=cfg.data, mask_root=cfg.mask_root)
    log = print if world.is_main else (lambda *args, **kwargs: None)
    model, model_args = build_model(cfg, len(split.classes))
    if cfg.init and not resume:
        load_init_weights(model, cfg.init)
    if cfg.freeze_pretrained:
        if not cfg.init:
            raise ValueError("freeze_pretrained needs init: the weights to keep frozen")
        trainable = freeze_pretrained(model, cfg.init)
        log(f"freeze_pretrained: training {len(trainable)} tensors: {trainable[:6]}")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg, class_weights(cfg, split))
    if criterion.needs_masks and split.mask_root is None:
        raise ValueError(f"aux_loss {cfg.aux_loss!r} needs masks: set mask_root (e.g. --set mask_root=DIR)")
    train_loader, val_loader, cache = make_loaders(cfg, split, criterion.needs_masks, world)
    forward = DataParallelForward(model, device) if world.size > 1 else model
    optimizer = make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.amp
                                  and not torch.cuda.is_bf16_supported())
    ema = make_ema(cfg, model)
    start_epoch, history, best, stale = 0, [], -math.inf, 0
    if resume and (out_dir / "last.pt").is_file():
        last = torch.load(out_dir / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(last["model"])
        if ema is not None:
            ema.load_state_dict(last["ema"])
        optimizer.load_state_dict(last["optimizer"])
        scaler.load_state_dict(last["scaler"])
        torch.set_rng_state(last["torch_rng"])
        start_epoch, history, best, stale = last["epoch"] + 1, last["history"], last["best_val"], last["stale"]
        log(f"resumed from {out_dir / 'last.pt'} at epoch {start_epoch + 1}")
    t0 = time.time()
    if cfg.linear_probe and start_epoch == 0:
        # the probe is "epoch 0": its checkpoint stands unless an epoch beats it on validation
        probe = fit_linear_probe(model, eval_loader(cfg, split.train, cache), val_loader, device, cfg, cfg.seed)
        ema = make_ema(cfg, model)  # the average starts from the probed head
        val = validate(model, val_loader, device, cfg, split)
        best = val[cfg.select_metric]
        history.append({"epoch": 0, "probe_C": probe["C"], **{k: val[k] for k in ("val_loss", "val_acc", "val_bal_acc")},
                        "best": True, "elapsed_s": round(time.time() - t0, 1)})
        if world.is_main:
            torch.save(checkpoint_dict(model, model_args, cfg, split, -1, history, best,
                                       {"probe": probe, "train_seconds": time.time() - t0}),
                       out_dir / "checkpoint.pt")
            (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        log(f"linear probe: C={probe['C']} val_bal_acc={val['val_bal_acc']:.4g}")
    log(f"training {cfg.model} on {device} x {world.size} ({len(split.train)} train / {len(split.val)} val / "
        f"{len(split.test)} test images, {len(split.classes)} classes) -> {out_dir}")
    for epoch in range(start_epoch, cfg.epochs):
        # determine and set the learning rate for this epoch
        lr = get_lr(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # forward, backward, update over one pass of the training set
        row = {"epoch": epoch + 1, "lr": lr}
        if world.size > 1:
            train_loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        row |= train_one_epoch(model, train_loader, criterion, optimizer, scaler, cfg, device, epoch, ema, forward)
        # what is evaluated and saved: the weight average when there is one
        served = ema.module if ema is not None else model

        # evaluate on the validation split and checkpoint the best epoch (every rank evaluates all of
        # it, so all agree on the best epoch and on early stopping; rank 0 writes)
        last_epoch = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            val = validate(served, val_loader, device, cfg, split)
            row |= {k: val[k] for k in ("val_loss", "val_acc", "val_bal_acc")}
            score = val[cfg.select_metric]
            stale = stale + 1
            if score > best:
                best, stale = score, 0
                if world.is_main:
                        torch.save(checkpoint_dict(served, model_args, cfg, split, epoch, history + [row], best,
                                               {"train_seconds": time.time() - t0}),
                               out_dir / "checkpoint.pt")
                row["best"] = True
        row["elapsed_s"] = round(time.time() - t0, 1)
        history.append(row)
        if world.is_main:
            torch.save(checkpoint_dict(model, model_args, cfg, split, epoch, history, best, {
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(), "stale": stale,
                **({"ema": ema.state_dict()} if ema is not None else {})}), out_dir / "last.pt")
            (out_dir / "history.json").write_text(json.dumps(history, indent=1))

        # log
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

        # termination: early stop after `patience` evaluations without improvement
        if cfg.patience and stale >= cfg.patience:
            log(f"stopping early: no better {cfg.select_metric} in {stale} evaluations")
            break
    seconds = time.time() - t0
    epochs_run = sum(r["epoch"] > 0 for r in history)
    images = len(split.train) * (epochs_run - start_epoch)
    return {"best_val": best, "epochs_run": epochs_run, "seconds": seconds,
            "train_images_per_s": images / max(seconds, 1e-9)}
