"""Teacher members on disk and the teacher-logit cache.

Layout under a sweep's directory:
    teachers/<teacher>/member-<i>/model.pt      final weights (written atomically)
    teachers/<teacher>/member-<i>/result.json   val/test error, config, sha256 of model.pt: the "done" mark
    cache/<teacher>.pt                          {"key", "logits": {split: (M, N, C)}} for all M members
    cache/<teacher>.json                        manifest: key, sha256 of the .pt, each member's and the
                                                ensemble's val/test error
The cache key hashes the data set, split, transfer-set recipe and every member's weights, so a changed
recipe or a retrained member is a miss, never a stale hit. Loading verifies the file's sha256.
"""

from __future__ import annotations

import torch
from torch import nn

from distill import data, experiment, files, models
from distill.config import DataConfig, TeacherConfig, to_dict
from distill.errors import UserError
from distill.files import Location, Where
from distill.teachers import ensemble, parse
from distill.train import Fit, error, infer


def member_dir(root: Where, teacher: str, index: int) -> Location:
    return files.location(root) / "teachers" / teacher / f"member-{index}"


def data_identity(config: DataConfig) -> dict:
    """What decides the data a net learns from and is scored on: everything but where the files lie (moving
    the data, or mounting it elsewhere on a node, changes nothing)."""
    return {k: v for k, v in to_dict(config).items() if k != "root"}


def member_identity(data_config: DataConfig, teacher: TeacherConfig, index: int) -> dict:
    """What decides member `index`'s weights: the data, the architecture, its training and seed, and how it is
    sharded (workers). Not its name, the ensemble's size or the resources it ran on."""
    net = {k: v for k, v in to_dict(teacher).items()
           if k not in ("name", "members", "cpus_per_worker", "gpus_per_worker")}
    return {"data": data_identity(data_config), "teacher": net, "index": index}


def member_result(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int) -> tuple[dict | None, str]:
    """(the finished member's result, "") if it was trained as the sweep now asks, else (None, why not).
    A damaged member is refused."""
    d = member_dir(root, teacher.name, index)
    if not (d / "result.json").exists():
        return None, "not trained yet"
    result = files.read_json(d / "result.json")
    weights = d / "model.pt"
    if not weights.exists() or files.sha256(weights.read_bytes()) != result.get("sha256"):
        raise UserError(f"teacher member {d} is damaged (model.pt missing or does not match result.json): "
                        f"delete {d} and run `distill teachers` again to retrain it")
    changed = differences(result.get("identity", {}), member_identity(data_config, teacher, index))
    if changed:
        return None, f"trained with other settings ({', '.join(changed)} changed)"
    return result, ""


def differences(old: dict, new: dict) -> list[str]:
    """The flattened keys whose values differ: {'a': {'b': 1}} vs {'a': {'b': 2}} -> ['a.b']."""
    old, new = experiment.flatten(old), experiment.flatten(new)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def save_member(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int, model: nn.Module,
                splits: data.Splits, fitted: Fit) -> dict:
    d = member_dir(root, teacher.name, index)
    payload = files.torch_bytes({k: v.cpu() for k, v in model.state_dict().items()})
    files.write_bytes(d / "model.pt", payload)
    val, test = infer(model, splits.val_x), infer(model, splits.test_x)
    result = {"teacher": to_dict(teacher), "index": index, "sha256": files.sha256(payload),
              **models.facts(model, splits.shape),
              "identity": member_identity(data_config, teacher, index),
              "val_error": error(val, splits.val_y), "test_error": error(test, splits.test_y),
              "seconds": fitted.seconds, "epochs": fitted.epochs, "best_epoch": fitted.best_epoch,
              "resumed_from": fitted.resumed_from}
    files.write_json(d / "result.json", result)  # written last: its presence means "done"
    return result


def load_member(root: Where, teacher: TeacherConfig, index: int, splits: data.Splits) -> nn.Module:
    model = experiment.build_member(teacher, index, splits)
    state = files.torch_load(member_dir(root, teacher.name, index) / "model.pt")
    model.load_state_dict(state)
    return model.to(splits.train_x.device)


def key(data_config: DataConfig, teacher: TeacherConfig, shas: list[str]) -> str:
    """Content hash of (data identity, the teacher's settings, each member's weights)."""
    return files.digest({"data": data_identity(data_config),
                   "teacher": member_identity(data_config, teacher, 0)["teacher"], "members": shas})


def cache_paths(root: Where, teacher: str) -> tuple[Location, Location]:
    d = files.location(root) / "cache"
    return d / f"{teacher}.pt", d / f"{teacher}.json"


def ready(root: Where, data_config: DataConfig, teacher: TeacherConfig) -> tuple[list[dict], str]:
    """Every member's result and the cache key they make; refused unless all are finished with these settings.
    Reads and hashes every member's weights: compute it once and pass the key on."""
    results = [member_result(root, data_config, teacher, i) for i in range(teacher.members)]
    missing = [f"{i} ({why})" for i, (r, why) in enumerate(results) if r is None]
    if missing:
        raise UserError(f"teacher {teacher.name!r} under {root} has members that are not ready: {', '.join(missing)}: "
                        "run `distill teachers SWEEP_FILE` first")
    return [r for r, _ in results], key(data_config, teacher, [r["sha256"] for r, _ in results])


def expected_key(root: Where, data_config: DataConfig, teacher: TeacherConfig) -> str:
    return ready(root, data_config, teacher)[1]


def cached(root: Where, data_config: DataConfig, teacher: TeacherConfig, want: str | None = None) -> bool:
    """Whether a cache file with the current key (`want`, else computed) exists (not yet verified: `load` does
    that)."""
    manifest = cache_paths(root, teacher.name)[1]
    if not manifest.exists():
        return False
    return files.read_json(manifest)["key"] == (expected_key(root, data_config, teacher) if want is None else want)


def harvest(root: Where, data_config: DataConfig, teacher: TeacherConfig, splits: data.Splits,
            transfer: data.TransferSet, batch_size: int = 1024) -> dict:
    """Compute every member's logits on transfer/val/test once, and write the cache; returns the manifest."""
    k = expected_key(root, data_config, teacher)
    per_split: dict[str, list[torch.Tensor]] = {s: [] for s in experiment.SPLITS}
    for i in range(teacher.members):
        model = load_member(root, teacher, i, splits)
        for split, logits in experiment.harvest(model, splits, transfer, batch_size).items():
            per_split[split].append(logits.cpu())
    logits = {s: torch.stack(v) for s, v in per_split.items()}  # split -> (M, N, C)
    payload = files.torch_bytes({"key": k, "logits": logits})
    pt, manifest_path = cache_paths(root, teacher.name)
    files.write_bytes(pt, payload)
    members = [error(logits["test"][i], splits.test_y.cpu()) for i in range(teacher.members)]
    manifest = {"key": k, "teacher": teacher.name, "sha256": files.sha256(payload), "data": to_dict(data_config),
                "members": [{"index": i, "val_error": error(logits["val"][i], splits.val_y.cpu()),
                             "test_error": members[i],
                             **experiment.speech_scores(splits, {"test": logits["test"][i].to(splits.test_y.device)})}
                            for i in range(teacher.members)],
                "ensemble": {"val_error": error(logits["val"].mean(0), splits.val_y.cpu()),
                             "test_error": error(logits["test"].mean(0), splits.test_y.cpu()),
                             **experiment.speech_scores(splits, {s: logits[s].mean(0).to(splits.test_y.device)
                                                                 for s in ("val", "test")})},
                "shapes": {s: list(v.shape) for s, v in logits.items()}}
    files.write_json(manifest_path, manifest)  # written last: the manifest commits the cache
    return manifest


def load(root: Where, data_config: DataConfig, teacher: TeacherConfig,
         want: str | None = None) -> dict[str, torch.Tensor]:
    """The per-member logits {split: (M, N, C)}, verified against the manifest's hash and the current key
    (`want`, if the caller computed it already: `expected_key` reads and hashes every member's weights)."""
    pt, manifest_path = cache_paths(root, teacher.name)
    fix = "run `distill teachers SWEEP_FILE` (it trains what is missing and harvests)"
    if not manifest_path.exists() or not pt.exists():
        raise UserError(f"no logit cache for teacher {teacher.name!r} under {files.location(root) / 'cache'}: {fix}")
    manifest = files.read_json(manifest_path)
    want = expected_key(root, data_config, teacher) if want is None else want
    if manifest.get("key") != want:
        raise UserError(f"logit cache {pt} is for another data set, transfer recipe or set of members "
                        f"(key {manifest.get('key')}, this sweep needs {want}): {fix}")
    payload = pt.read_bytes()
    if files.sha256(payload) != manifest.get("sha256"):
        raise UserError(f"logit cache {pt} is corrupt (its sha256 does not match {manifest_path.name}): "
                        f"delete it and {fix}")
    content = files.load_tensors(payload, pt)
    if content.get("key") != want:
        raise UserError(f"logit cache {pt} does not hold the key its manifest names: delete it and {fix}")
    return content["logits"]


def teacher_logits(per_member: dict[str, dict[str, torch.Tensor]], members: dict[str, int],
                   name: str) -> dict[str, torch.Tensor] | None:
    """Teacher `name`'s logits {split: (N, C)}: the mean over its members, from the per-member cache
    {teacher: {split: (M, N, C)}}; None for no teacher (label-trained students)."""
    if not name:
        return None
    base, idx = parse(name, members)
    return {split: ensemble(v, idx) for split, v in per_member[base].items()}


def load_all(root: Where, data_config: DataConfig, teachers,
             keys: dict[str, str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Every teacher's verified per-member logits {teacher: {split: (M, N, C)}}; `keys` as `load`'s `want`."""
    return {t.name: load(root, data_config, t, (keys or {}).get(t.name)) for t in teachers}
