"""The `distill` command line: `python -m distill {teachers,sweep,run} SWEEP_FILE [options]`,
`python -m distill report RESULTS_DIR` and `python -m distill export RESULTS_DIR [--where ...] [--out DIR]`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from distill.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill", description="Shallow students that mimic deep teachers.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in [("teachers", "train the teacher ensembles and harvest their logits"),
                       ("sweep", "the student sweep (needs the teachers' logit cache)"),
                       ("run", "teachers, harvest and the student sweep in one go")]:
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("sweep", help="a sweep file, e.g. sweeps/demo.py")
        s.add_argument("--variant", default="default", help="the sweep file's variant (default, smoke, ...)")
        s.add_argument("--storage", help="where results, caches and checkpoints go: a directory or a URI "
                       "such as s3://bucket/dir (overrides the sweep's)")
        s.add_argument("--device", default="cuda" if _cuda() else "cpu")
        s.add_argument("--local", action="store_true", help="run in this process, without Ray (for debugging)")
        s.add_argument("--address", help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
        s.add_argument("--data-root", help="data directory of the torchvision data sets, or your TIMIT copy "
                       "(overrides the sweep's)")
        s.add_argument("--verbose", action="store_true", help="Ray's worker logs and Tune's tables on the console "
                       "too (by default they go to Ray's log folder, named in one line)")
        if name != "teachers":
            s.add_argument("--mlflow", metavar="URI", help="log every student trial (settings, each epoch's metrics, "
                           "its row) and the run record to MLflow: a directory (its file store) or a tracking server "
                           "URI such as http://host:5000; the experiment is the sweep's name")
    r = sub.add_parser("report", help="capacity curves, tables and fits of a finished sweep",
                       description="write report.md and PNG figures beside a sweep's results")
    r.add_argument("results_dir", help="the directory (or s3://... URI) a sweep wrote (it holds results.parquet)")
    e = sub.add_parser("export", help="the best student by val error as safetensors, ONNX and a model card",
                       description="write the chosen trial's model.safetensors, model.onnx and model.json")
    e.add_argument("results_dir", help="the directory (or s3://... URI) a sweep wrote (it holds results.parquet)")
    e.add_argument("--where", help="which trials to choose from: a pandas query over the results' columns, e.g. "
                   "\"target == 'mimic' and hidden == 1024\" (default: all)")
    e.add_argument("--out", help="where the files go (default RESULTS_DIR/export/<trial>)")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        return dispatch(args, argv)
    except UserError as e:
        print(f"distill: error: {e}", file=sys.stderr)
        return 2


def dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "report":
        from distill import report

        return report.main(args.results_dir)
    if args.command == "export":
        from distill import export

        export.main(args.results_dir, args.where, args.out)
        return 0
    from distill import budget, experiment, pipeline, preflight
    from distill.config import load_sweep

    # Everything a user can get wrong is checked before data loads, Ray starts or anything is written.
    sweep = load_sweep(args.sweep, args.variant)
    if args.data_root:
        sweep = dataclasses.replace(sweep, data=dataclasses.replace(sweep.data, root=args.data_root))
    if args.local and sweep.search.samples > 1:
        raise UserError(f"sweep {sweep.name!r} searches {sweep.search.samples} samples per cell, which needs Ray "
                        "Tune: drop --local, or set SearchConfig(samples=1)")
    mlflow = getattr(args, "mlflow", None)
    if mlflow and args.local:
        raise UserError("--mlflow logs the trials through Ray Tune's MLflow callback, which --local does not run: "
                        "drop --local (a local Ray runs on this machine too)")
    device = preflight.device(args.device)
    address = None if args.local else args.address or os.environ.get("RAY_ADDRESS")
    preflight.address(address)
    root = preflight.location(args.storage or sweep.storage) / sweep.name  # a local path or a URI (s3://, gs://)
    preflight.storage(root)
    if mlflow:  # the store opens and holds the sweep's experiment, before any work
        from distill import ray_mlflow

        mlflow = ray_mlflow.Tracking(mlflow, sweep.name, args.verbose)
        mlflow.check()
    # Prepared on the CPU for Ray: trials move it to their device. Bad data paths fail here, before Ray starts.
    splits, transfer = experiment.prepare(sweep.data, device if args.local else "cpu")
    budget.check_fits(sweep, splits, transfer, device, on_this_machine=args.local or address is None)
    if args.local:
        from distill import local

        executor = local.Executor(sweep, root, splits, transfer, print)
    else:
        from distill import ray_sweep

        # Starts Ray when first used.
        executor = ray_sweep.Executor(sweep, root, splits, transfer, print, address, args.verbose, mlflow)
    frame = pipeline.run(sweep, root, executor, args.command, print, ["distill", *argv])
    if frame is not None:
        print(summary(frame))
    return 0


def summary(frame) -> str:
    """Mean test error per cell over seeds (per cell and seed the trial of lowest val error, as the report keeps):
    the first look at a sweep. Agreement and phone error rate appear where the rows have them."""
    from distill import analysis

    table = analysis.cells(analysis.select(frame))
    if table.empty:
        return "no trial finished"
    table = table.assign(bottleneck=table["bottleneck"].fillna(0).astype(int)).rename(columns={"error": "test_error"})
    cols = ["params", "test_error", "sd", "n"] + [c for c in ("agreement", "per") if table[c].notna().any()]
    # The transfer set is a column only where the sweep has more than one (DataConfig.transfers).
    index = [c for c in analysis.GROUP if c != "transfer_views" or table[c].nunique() > 1]
    return table.set_index(index)[cols].to_string(float_format=lambda v: f"{v:.4f}")


if __name__ == "__main__":
    sys.exit(main())
