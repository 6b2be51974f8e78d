"""The in-process executor (`--local`): the pipeline's member and student jobs, one after another, without Ray.

For debugging and for machines without a Ray cluster. Every student keeps its checkpoint and writes its row in
its own trial directory as it finishes, exactly as a Ray trial does, so an interrupted local sweep (Ctrl-C, a
full disk) keeps what finished and a re-run resumes it.
"""

from __future__ import annotations

from distill import cache, experiment, files, pipeline
from distill.config import SweepConfig, TeacherConfig


class Executor:
    def __init__(self, sweep: SweepConfig, root: files.Where, splits, transfer, log: pipeline.Log = print):
        self.sweep, self.root, self.splits, self.transfer, self.log = sweep, files.location(root), splits, transfer, log

    def with_data(self, sweep: SweepConfig, splits, transfer) -> Executor:
        return Executor(sweep, self.root, splits, transfer, self.log)

    def train_members(self, pending: list[tuple[TeacherConfig, int]]) -> None:
        for teacher, i in pending:
            model, fitted = experiment.train_member(teacher, i, self.splits, self.transfer)
            result = cache.save_member(self.root, self.sweep.data, teacher, i, model, self.splits, fitted)
            cache.harvest_member(self.root, self.sweep.data, teacher, i, model, result["sha256"], self.splits,
                                 self.transfer)
            self.log(f"teacher {teacher.name}[{i}]: test error {result['test_error']:.4f} ({result['seconds']:.0f} s)")

    def harvest(self, teacher: TeacherConfig, indices: list[int]) -> None:
        cache.harvest(self.root, self.sweep.data, teacher, indices, self.splits, self.transfer)

    def run_students(self, jobs: list[pipeline.Job], logits: dict, done: dict[str, list[dict]],
                     search: bool) -> list[dict]:
        """Every job once with its config's settings: a search (samples > 1) needs Ray Tune (the CLI refuses
        --local with one before anything runs)."""
        device = self.splits.train_y.device
        logits = {k: v.to(device) for k, v in logits.items()}
        for n, job in enumerate(jobs, 1):
            teacher, reference = pipeline.given(job, logits)
            row = experiment.student_trial(job.cell, self.splits, self.transfer, teacher, reference,
                                           pipeline.trial_dir(self.root, job), self.sweep.checkpoint_every)
            score = f"test error {row['test_error']:.4f}" if row["status"] == "ok" else row["reason"]
            self.log(f"student {n}/{len(jobs)}: {job.id}: {score}")
        return []
