"""Run a whole sweep in this process, without Ray: teachers, harvest, students, one after another.

For debugging and for machines without a Ray cluster; the Ray adapters run the same steps in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from distill import cache, experiment, io, results
from distill.config import SweepConfig, to_dict
from distill.teachers import parse


def train_teachers(sweep: SweepConfig, root: Path, splits, transfer, log: Callable[[str], None]) -> None:
    """Train every unfinished member, then harvest every teacher whose cache is missing or stale."""
    for teacher in sweep.teachers:
        for i in range(teacher.members):
            if cache.member_result(root, teacher.name, i) is not None:
                log(f"teacher {teacher.name}[{i}]: done before, skipped")
                continue
            model, fitted = experiment.train_member(teacher, i, splits, transfer)
            result = cache.save_member(root, teacher, i, model, splits, fitted.seconds, fitted.epochs)
            log(f"teacher {teacher.name}[{i}]: test error {result['test_error']:.4f} ({result['seconds']:.0f} s)")
        if cache.cached(root, sweep.data, teacher):
            log(f"teacher {teacher.name}: logits cached before, not harvested again")
            continue
        manifest = cache.harvest(root, sweep.data, teacher, splits, transfer)
        log(f"teacher {teacher.name}: ensemble test error {manifest['ensemble']['test_error']:.4f}, "
            f"harvested {manifest['shapes']['transfer'][1]} transfer inputs")


def run(sweep: SweepConfig, root: Path, device: str = "cpu", log: Callable[[str], None] = print) -> pd.DataFrame:
    root = Path(root)
    io.write_json(root / "config.json", to_dict(sweep))
    splits, transfer = experiment.prepare(sweep.data, device)
    train_teachers(sweep, root, splits, transfer, log)
    members = {t.name: t.members for t in sweep.teachers}
    per_member = {t.name: cache.load(root, sweep.data, t) for t in sweep.teachers}

    def logits(name: str) -> dict[str, torch.Tensor] | None:
        if not name:
            return None
        base, idx = parse(name, members)
        return {s: v.to(device) for s, v in cache.teacher_logits(per_member[base], idx).items()}

    reference = sweep.student_teachers[0] if sweep.student_teachers else ""
    rows = []
    cells = sweep.cells()
    for n, cell in enumerate(cells, 1):
        row = experiment.run_student(cell, splits, transfer, logits(cell.teacher),
                                     logits(cell.teacher or reference))
        rows.append(row)
        log(f"student {n}/{len(cells)}: {cell.target} H={cell.hidden} k={cell.bottleneck} "
            f"seed={cell.train.seed}: test error {row['test_error']:.4f}")
    return results.write(root, rows)
