"""The `distill` command line: `python -m distill {teachers,sweep,run} SWEEP_FILE [options]`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from distill.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill", description="Shallow students that mimic deep teachers.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in [("teachers", "train the teacher ensembles and harvest their logits"),
                       ("run", "teachers, harvest and the student sweep in one go")]:
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("sweep", help="a sweep file, e.g. sweeps/demo.py")
        s.add_argument("--variant", default="default", help="the sweep file's variant (default, smoke, ...)")
        s.add_argument("--storage", help="where results, caches and checkpoints go (overrides the sweep's)")
        s.add_argument("--device", default="cuda" if _cuda() else "cpu")
        s.add_argument("--local", action="store_true", help="run in this process, without Ray (for debugging)")
        s.add_argument("--address", help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
        s.add_argument("--data-root", help="data directory of the torchvision data sets (overrides the sweep's)")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return dispatch(args)
    except UserError as e:
        print(f"distill: error: {e}", file=sys.stderr)
        return 2


def dispatch(args: argparse.Namespace) -> int:
    from distill import experiment, local
    from distill.config import load_sweep

    sweep = load_sweep(args.sweep, args.variant)
    if args.data_root:
        sweep = dataclasses.replace(sweep, data=dataclasses.replace(sweep.data, root=args.data_root))
    root = Path(os.path.expanduser(args.storage or sweep.storage)) / sweep.name
    if args.command == "teachers":
        if args.local:
            splits, transfer = experiment.prepare(sweep.data, args.device)
            local.train_teachers(sweep, root, splits, transfer, print)
        else:
            from distill import ray_shared, ray_teachers

            splits, transfer = experiment.prepare(sweep.data)  # CPU: workers move it to their device
            ray_shared.init(args.address)
            ray_teachers.train(sweep, root, splits, transfer)
    elif args.command == "run":
        frame = local.run(sweep, root, args.device)
        print(f"{len(frame)} students; results in {root}/results.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
