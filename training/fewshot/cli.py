"""The few-shot subcommands, registered into `python -m training` by training/cli.py.

    python -m training fewshot --config training/configs/fewshot_breakhis_fast.json --out runs/fs/protonet \
        [--set method=maml --set method_args.first_order=true ...]
    python -m training fewshot-eval --run runs/fs/protonet [--run ...] [--table runs/fs/table]
    python -m training fewshot-export --run runs/fs/dual_attention --store model_store --name NAME
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fewshot", help="meta-train a few-shot method (episodic)")
    p.add_argument("--config", required=True, help="a training/configs/fewshot_*.json file")
    p.add_argument("--out", required=True, help="run directory: checkpoint.pt, log.jsonl, config.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (JSON-parsed; dotted keys nest), repeatable")
    p.add_argument("--eval", action="store_true", help="evaluate on the config's test sets after training")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=_train)

    p = sub.add_parser("fewshot-eval", help="evaluate few-shot runs: accuracy with a 95%% CI over test episodes")
    p.add_argument("--run", action="extend", nargs="+", required=True, help="run directories; repeatable")
    p.add_argument("--shots", type=int, nargs="+", default=None, help="K values (default: the config's, 1 and 5)")
    p.add_argument("--episodes", type=int, default=None, help="test episodes per cell (default: config, 600)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="test-time override, e.g. method_args.inner_steps_test=0 (use with --label)")
    p.add_argument("--label", default="", help="suffix naming this evaluation variant in the table and files")
    p.add_argument("--test", action="append", default=None, help="only this test set of the config, repeatable")
    p.add_argument("--reuse", action="store_true", help="use a run's existing eval.json instead of evaluating")
    p.add_argument("--table", default=None, help="write the combined table to TABLE.md and TABLE.json")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("fewshot-export", help="export a run's embedding as an embedding bundle for /adapt")
    p.add_argument("--run", required=True)
    p.add_argument("--store", default="model_store")
    p.add_argument("--name", required=True)
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="export-time override that keeps the weights, e.g. backbone_args.pool_attn_keep_mean=true")
    p.set_defaults(func=_export)


def _train(args) -> int:
    from .config import load_config
    from .evaluate import evaluate_run
    from .train import meta_train

    cfg = load_config(args.config, args.set)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports and evaluates
    if main_rank:
        print(json.dumps(cfg.to_dict()), flush=True)
    meta_train(cfg, args.out, resume=args.resume)
    if args.eval and main_rank:
        evaluate_run(args.out)
    return 0


def _evaluate(args) -> int:
    from .evaluate import eval_stem, evaluate_run, markdown_table

    reports = []
    for run in args.run:
        cached = Path(run) / f"{eval_stem(args.label)}.json"
        if args.reuse and cached.is_file():
            reports.append(json.loads(cached.read_text()))
        else:
            reports.append(evaluate_run(run, shots=args.shots, episodes=args.episodes, device=args.device,
                                        overrides=args.set, label=args.label, tests=args.test))
    table = markdown_table(reports)
    print(table)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.table}.md").write_text(table)
        Path(f"{args.table}.json").write_text(json.dumps(reports, indent=2))
    return 0


def _export(args) -> int:
    from .export import export_embedding

    print(export_embedding(args.run, args.store, args.name, version=args.version, overrides=args.set))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fewshot")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
