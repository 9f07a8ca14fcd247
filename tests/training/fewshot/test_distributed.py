"""Episodic training on two ranks (gloo): averaged gradients equal one process's meta-batch; torchrun resumes."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.distributed import World, init_world, shutdown
from training.fewshot.bank import load_bank
from training.fewshot.build import build_method, normalisation
from training.fewshot.config import FewShotConfig
from training.fewshot.train import episode_step

from ..conftest import make_folder

CONFIG = {"name": "tiny", "method": "protonet", "backbone": "resnet18",
          "backbone_args": {"widths": [8, 8, 16, 16]}, "image_size": 16,
          "train": {"name": "base", "dataset": "ebhi_seg", "classes": ["a", "b", "c"], "q_query": 1},
          "tests": [], "n_way": 3, "k_shot": 1, "q_query": 1, "episodes": 4, "meta_batch": 1,
          "augment": False, "threads": 1, "log_every": 2, "eval_shots": [1], "eval_episodes": 5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grads(cfg: FewShotConfig, data_root, indices, world: World) -> dict:
    torch.manual_seed(0)
    bank = load_bank(cfg.train[0], cfg.image_size, root=Path(data_root))
    method = build_method(cfg)
    mean, std = normalisation(method)
    episode_step(method, [(bank, bank.sampler(cfg.n_way, cfg.k_shot, cfg.q_query, seed=0))], indices, mean, std, cfg,
                 np.random.default_rng(0), world)
    return {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}


def _rank(rank: int, port: int, data_root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = init_world("cpu")
    cfg = FewShotConfig.from_dict(CONFIG)  # meta_batch 1 per rank
    torch.save(_grads(cfg, data_root, [rank], world), f"{out}.{rank}")  # rank r takes episode r
    shutdown(world)


@pytest.fixture
def data_root(tmp_path):
    make_folder(tmp_path / "data" / "ebhi_seg", {"a": 0, "b": 1, "c": 2}, groups_per_class=4, images_per_group=2)
    return tmp_path / "data"


def test_two_ranks_average_to_one_process_meta_batch_of_two(data_root, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, str(data_root), str(tmp_path / "g"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    single = _grads(FewShotConfig.from_dict({**CONFIG, "meta_batch": 2}), data_root, [0, 1], World())
    ranks = [torch.load(tmp_path / f"g.{r}", weights_only=True) for r in range(2)]
    assert single and any(g.abs().sum() > 0 for g in single.values())
    for name, g in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        assert torch.allclose(ranks[0][name], g, atol=1e-6), name


@pytest.mark.slow
def test_torchrun_meta_trains_on_two_ranks_and_resumes(data_root, tmp_path):
    config, run = tmp_path / "fs.json", tmp_path / "run"
    config.write_text(json.dumps(CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HISTOSERVE_DATA_DIR": str(data_root)}

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "training",
                               "fewshot", "--config", str(config), "--out", str(run), *extra],
                              env=env, capture_output=True, text=True, timeout=300)

    first = torchrun()
    assert first.returncode == 0, first.stderr[-3000:]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in log] == [2, 4]  # each step: one episode per rank
    resumed = torchrun("--set", "episodes=8", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in log] == [2, 4, 6, 8]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["world_size"] == 2
