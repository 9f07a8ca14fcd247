"""`python -m bench [options]`: benchmark every bundle of a store; write results and print the table."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from service.settings import Settings

from .images import REPO_ROOT, default_data_dir
from .run import FULL, PROVIDERS, QUICK, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--store", type=Path, default=None,
                        help="model store to benchmark (default: the service's, HISTOSERVE_MODEL_STORE or model_store/)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME[/VERSION]",
                        help="benchmark only this bundle (repeatable; default: the latest version of every bundle)")
    parser.add_argument("--adapt-model", metavar="NAME[/VERSION]",
                        help="bundle for /adapt (default: every embedding bundle benchmarked)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding ebhi_seg/ (default: HISTOSERVE_DATA_DIR or ../shared/data)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run: a few requests at concurrency 1 and 2 (what the test suite runs)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive eager-PyTorch endpoint")
    parser.add_argument("--no-plain", action="store_true",
                        help="skip the plain FastAPI + ONNX Runtime endpoint (no batcher)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="auto",
                        help="execution provider for raw ORT and every server (default: CUDA when available, "
                             "else CPU; cuda: the service refuses to start unless it really runs on CUDA)")
    parser.add_argument("--int8", action="store_true",
                        help="also build an int8 (static quantization) variant of each classifier and compare it")
    parser.add_argument("--int8-store", type=Path, help="keep the int8 bundles in this store (default: not kept)")
    parser.add_argument("--level-seconds", type=float, help="override the time bound of each load level")
    parser.add_argument("--soak-requests", type=int, help="override the requests between the two memory readings")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.level_seconds is not None:
        plan = replace(plan, level_seconds=args.level_seconds)
    if args.soak_requests is not None:
        plan = replace(plan, soak_requests=args.soak_requests)
    store = args.store or Settings().model_store
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    results, json_path, md_path = run(plan, store=store, data_dir=args.data_dir or default_data_dir(),
                                      results_dir=args.results_dir, models=args.models, adapt_model=args.adapt_model,
                                      naive=not args.no_naive, command=command, int8=args.int8,
                                      int8_store=args.int8_store, provider=args.provider, plain=not args.no_plain)
    print(md_path.read_text(encoding="utf-8"))
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
