"""`python -m training SUBCOMMAND ...`: one entry point for every offline step.

    python -m training train --config training/configs/ebhi_cbam_resnet18_fast.json \
        --data ../shared/data/ebhi_seg --out runs/ebhi_cbam_resnet18_fast [--set epochs=5] [--resume]
    python -m training evaluate --run runs/ebhi_cbam_resnet18_fast
    python -m training baseline --data ../shared/data/ebhi_seg --out runs/ebhi_baseline [--config C] [--split S]

To add subcommands, write a module with `add_subcommands(subparsers)` whose parsers set
`func=handler` (handler(args) -> exit code, importing what it needs inside, so `--help` stays
fast) and add the module's name to COMMAND_MODULES: that list is the one place.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

COMMAND_MODULES = (
    "training.cli",  # train, evaluate, baseline (below)
    "training.fewshot.cli",  # fewshot, fewshot-eval, fewshot-export
    "training.export_cli",  # export, verify, localise
    "training.wsinfer",  # export-wsinfer (TorchScript + WSInfer config.json)
    "training.ensemble",  # cv-ensemble
)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network from a config; evaluates the best checkpoint at the end")
    p.add_argument("--config", required=True, help="a training/configs/*.json recipe")
    p.add_argument("--data", default=None, help="ImageFolder root (one folder per class); overrides the config's")
    p.add_argument("--out", required=True, help="run directory (split.json, config.json, checkpoint.pt, metrics.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (JSON-parsed when it parses), repeatable")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt on the run's split")
    p.add_argument("--no-eval", action="store_true", help="skip the test evaluation after training")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="test metrics, baseline, plots of a trained run -> RUN/metrics.json")
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--data", default=None, help="data root when it moved since training")
    p.add_argument("--no-baseline", action="store_true", help="skip the handcrafted baseline")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("baseline", help="the handcrafted baseline alone, on the same split code and metrics")
    p.add_argument("--data", default=None, help="ImageFolder root")
    p.add_argument("--out", required=True, help="directory for split.json and baseline.json")
    p.add_argument("--config", default=None, help="a recipe to take split settings and image size from")
    p.add_argument("--split", default=None, help="an existing split.json to reuse (e.g. a network run's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_baseline)

    p = sub.add_parser("compare", help="markdown table of several runs' test metrics (same split required)")
    p.add_argument("runs", nargs="+", help="run directories with metrics.json")
    p.set_defaults(func=_compare)

    p = sub.add_parser("cv-table", help="mean and std over cross-validation folds of several methods (same folds)")
    p.add_argument("methods", nargs="+", help="method directories holding fold0/, fold1/, ... run directories")
    p.add_argument("--json", default=None, help="also write the per-fold figures to this file")
    p.set_defaults(func=_cv_table)


def _overrides(args) -> list[str]:
    return list(args.set) + ([f"data={json.dumps(args.data)}"] if args.data else [])


def _train(args) -> int:
    from training.config import load_config
    from training.evaluate import evaluate_run
    from training.train import train

    cfg = load_config(args.config, _overrides(args))
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports and evaluates
    if main_rank:
        print(json.dumps(cfg.to_dict()), flush=True)
    summary = train(cfg, args.out, resume=args.resume)
    if main_rank:
        print(json.dumps(summary), flush=True)
        if not args.no_eval:
            _print_summary(evaluate_run(args.out))
    return 0


def _evaluate(args) -> int:
    from training.evaluate import evaluate_run

    _print_summary(evaluate_run(args.run, data=args.data, baseline=False if args.no_baseline else None))
    return 0


def _baseline(args) -> int:
    from pathlib import Path

    from training.baseline import run_baseline
    from training.config import load_config
    from training.splits import prepare_split

    over = _overrides(args) + ([f"split_file={json.dumps(args.split)}"] if args.split else [])
    cfg = load_config(args.config, over)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = prepare_split(cfg, out)
    result = run_baseline(split, size=min(cfg.image_size, 128), cache_dir=cfg.cache_dir if cfg.cache else None,
                          seed=cfg.seed)
    (out / "baseline.json").write_text(json.dumps(result, indent=1))
    for part in ("val", "test"):
        if part in result:
            m = result[part]
            print(f"baseline {part}: accuracy {m['accuracy']:.3f} balanced {m['balanced_accuracy']:.3f} "
                  f"macro-F1 {m['macro_f1']:.3f} (majority rate {m['majority_rate']:.3f})")
    return 0


def _compare(args) -> int:
    from training.compare import compare_runs

    print(compare_runs(args.runs))
    return 0


def _cv_table(args) -> int:
    from pathlib import Path

    from training.cv import cv_table

    table, summary = cv_table(args.methods)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(table)
    return 0


def _print_summary(metrics: dict) -> None:
    print(json.dumps(metrics["summary"], indent=1))


def build_parser() -> argparse.ArgumentParser:
    try:
        import models

        known = ", ".join(models.list_models())
    except ImportError as e:  # a broken models package should not hide the CLI's help
        known = f"(models could not be imported: {e})"
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train, evaluate and export the histopathology networks.",
        epilog=f"models: {known}", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input from the user: say what, without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
