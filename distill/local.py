"""Run a whole sweep in this process, without Ray: teachers, harvest, students, one after another.

For debugging and for machines without a Ray cluster; the Ray adapters run the same steps in parallel.
"""

from __future__ import annotations

from collections.abc import Callable

from distill import cache, experiment, io, results
from distill.config import SweepConfig


def train_teachers(sweep: SweepConfig, root: io.Where, splits, transfer, log: Callable[[str], None]) -> None:
    """Train every unfinished member, then harvest every teacher whose cache is missing or stale."""
    for teacher in sweep.teachers:
        for i in range(teacher.members):
            if cache.member_result(root, teacher.name, i) is not None:
                log(f"teacher {teacher.name}[{i}]: done before, skipped")
                continue
            model, fitted = experiment.train_member(teacher, i, splits, transfer)
            result = cache.save_member(root, teacher, i, model, splits, fitted)
            log(f"teacher {teacher.name}[{i}]: test error {result['test_error']:.4f} ({result['seconds']:.0f} s)")
        if cache.cached(root, sweep.data, teacher):
            log(f"teacher {teacher.name}: logits cached before, not harvested again")
            continue
        manifest = cache.harvest(root, sweep.data, teacher, splits, transfer)
        log(f"teacher {teacher.name}: ensemble test error {manifest['ensemble']['test_error']:.4f}, "
            f"harvested {manifest['shapes']['transfer'][1]} transfer inputs")


def sweep_students(sweep: SweepConfig, root: io.Where, splits, transfer, per_member: dict,
                   log: Callable[[str], None] = print):
    """Every cell once, with its config's settings (no search), one after another."""
    members = {t.name: t.members for t in sweep.teachers}
    device = splits.train_x.device
    per_member = {t: {s: v.to(device) for s, v in per.items()} for t, per in per_member.items()}
    rows = []
    cells = sweep.cells()
    for n, cell in enumerate(cells, 1):
        row = experiment.run_student(cell, splits, transfer, cache.teacher_logits(per_member, members, cell.teacher),
                                     cache.teacher_logits(per_member, members, sweep.reference(cell)))
        rows.append({"seed": cell.train.seed, **row, "status": "ok"})
        log(f"student {n}/{len(cells)}: {cell.target} H={cell.hidden} k={cell.bottleneck} "
            f"seed={cell.train.seed}: test error {row['test_error']:.4f}")
    return results.write(root, rows)
