"""Data-parallel training on the CPU with gloo: two ranks take the same step as one process."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest
import torch

import models
from training.config import load_config
from training.distributed import DataParallelForward, init_world, shutdown
from training.engine import set_train_mode
from training.losses import build_criterion
from training.train import make_optimizer, train_step

from .test_train import TINY
from .test_train import colour_folder as colour_folder  # noqa: F401  (a fixture, used by name)

STEP = ["imbalance=none", "freeze_bn=true", "optimizer=sgd", "lr=0.1", "ema_decay=0.0", "augment=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    """The same network, optimiser and global batch of 8 in every process (float32, no randomness)."""
    torch.manual_seed(0)
    cfg = load_config(None, TINY + STEP)
    model = models.create_model("resnet18", num_classes=3, widths=(8, 8, 16, 16))
    batch = {"image": torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)),
             "label": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}
    return cfg, model, batch, build_criterion(cfg, None), make_optimizer(cfg, model)


def _rank_step(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = init_world("cpu")
    cfg, model, batch, criterion, optimizer = _setup()
    half = {k: v[4 * rank: 4 * rank + 4] for k, v in batch.items()}
    set_train_mode(model, cfg.freeze_bn)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    train_step(DataParallelForward(model, torch.device("cpu")), model, half, criterion, optimizer, scaler, cfg,
               torch.device("cpu"), 0)
    torch.save(model.state_dict(), f"{out}.{rank}")
    shutdown(world)


def test_one_step_on_two_ranks_equals_one_step_in_one_process(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_step, args=(r, port, str(tmp_path / "w"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    cfg, model, batch, criterion, optimizer = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_train_mode(model, cfg.freeze_bn)
    train_step(model, model, batch, criterion, optimizer, torch.amp.GradScaler("cuda", enabled=False), cfg,
               torch.device("cpu"), 0)
    single = model.state_dict()
    ranks = [torch.load(tmp_path / f"w.{r}", weights_only=True) for r in range(2)]
    moved = [k for k in single if not torch.equal(single[k], before[k])]
    assert moved  # the step did something
    for k in single:
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # the ranks agree exactly
        assert torch.allclose(ranks[0][k], single[k], atol=1e-6), k  # and with one process on the whole batch


@pytest.mark.slow
def test_torchrun_trains_on_two_ranks_writes_once_and_resumes(colour_folder, tmp_path):
    run, config = tmp_path / "run", tmp_path / "tiny.json"
    config.write_text(json.dumps({"name": "tiny", "baseline": False}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), "-m", "training", "train", "--config", str(config),
                "--data", str(colour_folder), "--out", str(run), "--no-eval"]
        for item in TINY:
            args += ["--set", item]
        return subprocess.run(args + list(extra), env=env, capture_output=True, text=True, timeout=300)

    first = torchrun()
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("training resnet18 on cpu x 2") == 1  # rank 0 alone reports (and writes)
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [1, 2]
    resumed = torchrun("--set", "epochs=3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [1, 2, 3]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    models.create_model(ckpt["architecture"], **ckpt["model_args"]).load_state_dict(ckpt["model"])
