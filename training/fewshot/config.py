"""The few-shot run configuration: plain values, loaded from a JSON file and overridable from the CLI.

Class splits live here as data (which classes to meta-train on, which unseen classes to test on), never in
code. The resolved config is saved in every checkpoint beside the backbone's arguments, so a checkpoint
alone rebuilds its method.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DataSplit:
    name: str                      # how results name it, e.g. "breakhis_unseen"
    dataset: str                   # folder under the data dir, e.g. "breakhis_200x"
    classes: list[str]             # the classes episodes are drawn from
    q_query: int = 15              # queries per class (BreakHis phyllodes has 14 images: 5 + 9)
    masks: str | None = None       # folder under the data dir with expert masks of these images (same class and
                                   # file names), e.g. "ebhi_seg_masks": they teach a taught pooling attention


@dataclass
class FewShotConfig:
    name: str = "fewshot"                   # run label in the results table
    method: str = "protonet"                # protonet | maml | relation | dual_attention
    method_args: dict = field(default_factory=dict)   # e.g. inner_lr, inner_steps, first_order
    backbone: str = "cbam_resnet18"         # a models registry name with features(x) and embed(x)
    backbone_args: dict = field(default_factory=dict)  # e.g. widths, channel_attention, spatial_attention
    init: str | None = None                 # "imagenet" or a state-dict file/URL for the backbone, before meta-training
    image_size: int = 84                    # images are decoded once at this size and kept as uint8
    train: list[DataSplit] = field(default_factory=list)  # meta-training class pools; episode i from pool i % len
    tests: list[DataSplit] = field(default_factory=list)  # unseen-class test sets (and cross-dataset)
    n_way: int = 3                          # train and test way (a MAML head has a fixed width)
    k_shot: int = 5                         # shots while meta-training
    q_query: int = 10                       # queries per class while meta-training
    episodes: int = 2000                    # meta-training episodes
    meta_batch: int = 1                     # episodes per optimiser step
    lr: float = 1e-3                        # Adam, outer loop
    weight_decay: float = 0.0
    lr_decay_every: int = 0                 # halve the lr every this many episodes (0: never)
    augment: bool = True                    # flips and 90-degree rotations of training images
    trainable: list[str] = field(default_factory=list)  # backbone parameter-name prefixes to meta-train (empty: all)
    freeze_bn: bool = False                 # the backbone's BatchNorm keeps its (pretrained) statistics while meta-training
    attention_epochs: int = 0               # epochs teaching the backbone's pool attention from the train splits'
                                            # masks, before meta-training (backbone_args.pool_attn_stages)
    attention_lr: float = 1e-3              # Adam, for the pool attention alone
    cpu_bf16: bool = False                  # bfloat16 autocast while meta-training, on CPUs that compute it natively
    channels_last: bool = False             # NHWC batches (faster oneDNN convolutions)
    eval_shots: list[int] = field(default_factory=lambda: [1, 5])
    eval_episodes: int = 600                # test episodes per (test set, shot); the 95% CI needs many
    seed: int = 0
    threads: int = 0                        # torch threads (0: torch's default)
    log_every: int = 50
    device: str = "cpu"                     # "cuda" on a GPU machine

    @classmethod
    def from_dict(cls, d: dict) -> FewShotConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if not k.startswith("_")}  # "_comment" keys are notes, as in TrainConfig
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown few-shot config keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        train = d.get("train") or []
        d["train"] = [DataSplit(**t) for t in ([train] if isinstance(train, dict) else train)]  # one split: older configs
        d["tests"] = [DataSplit(**t) for t in d.get("tests", [])]
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.train:
            raise ValueError("the config needs a 'train' split (dataset and meta-training classes), or a list of them")
        taught = bool(self.backbone_args.get("pool_attn_stages"))
        if taught != (self.attention_epochs > 0) or (taught and not any(t.masks for t in self.train)):
            raise ValueError("a taught pooling attention (backbone_args.pool_attn_stages) needs attention_epochs > 0 "
                             "and a train split with masks, and attention_epochs needs the attention")
        for t in self.tests:
            for split in self.train:
                shared = sorted(set(t.classes) & set(split.classes))
                if t.dataset == split.dataset and shared:
                    raise ValueError(f"test set {t.name!r} shares classes {shared} with meta-training split "
                                     f"{split.name!r}: the test would not be on unseen classes")

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path, overrides: list[str] | None = None) -> FewShotConfig:
    """A JSON config with `key=value` overrides (value parsed as JSON when it parses, dotted keys nest)."""
    path = Path(path)
    if not path.is_file() and (REPO_ROOT / "training" / "configs" / path.name).is_file():
        path = REPO_ROOT / "training" / "configs" / path.name
    return FewShotConfig.from_dict(apply_overrides(json.loads(path.read_text()), overrides or []))


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """`key=value` items applied to a config dict (a deep copy): values parsed as JSON when they parse."""
    d = json.loads(json.dumps(d))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return d


def data_dir() -> Path:
    """Where the datasets live: $HISTOSERVE_DATA_DIR, or ../shared/data beside the repository."""
    return Path(os.environ.get("HISTOSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
