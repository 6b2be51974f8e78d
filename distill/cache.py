"""Teacher members on disk and the teacher-logit cache.

Layout under a sweep's directory:
    teachers/<teacher>/member-<i>/model.pt      final weights (written atomically)
    teachers/<teacher>/member-<i>/result.json   val/test error, config, sha256 of model.pt: the "done" mark
    cache/<teacher>-<key>/member-<i>-<split>.pt {"key", "index", "split", "logits": (N, C)}: one member on one
                                                split (transfer, val, test), fp16 when DataConfig.compact
    cache/<teacher>.json                        manifest: key, each chunk's file and sha256, each member's,
                                                each first-n sub-ensemble's and the ensemble's val/test error
The cache key hashes the data set, split, transfer-set recipe and every member's weights, so a changed
recipe or a retrained member is a miss, never a stale hit. Chunks keep every object far below the 5 GB of
a single S3 copy (TIMIT's 9 members: 0.4 GB each) and let members be harvested in parallel; each is verified
(sha256, key) as it is read. The manifest, written last, commits a harvest.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from distill import data, experiment, files, models
from distill.config import DataConfig, TeacherConfig, to_dict
from distill.errors import UserError
from distill.files import Location, Where
from distill.teachers import parse
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
              "resumed_from": fitted.resumed_from, "started_at": fitted.started_at, "finished_at": time.time()}
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
    """(the folder of chunk folders, the manifest) of `teacher`'s logit cache."""
    d = files.location(root) / "cache"
    return d, d / f"{teacher}.json"


def chunk_dir(root: Where, teacher: str, key: str) -> Location:
    """Where the chunks of one cache key live: a new key never writes over the chunks an old manifest names."""
    return cache_paths(root, teacher)[0] / f"{teacher}-{key[:16]}"


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
    """Whether a manifest with the current key (`want`, else computed) exists (its chunks are verified as they
    are read)."""
    manifest = cache_paths(root, teacher.name)[1]
    if not manifest.exists():
        return False
    return files.read_json(manifest)["key"] == (expected_key(root, data_config, teacher) if want is None else want)


def logit_dtype(data_config: DataConfig) -> torch.dtype:
    return torch.float16 if data_config.compact else torch.float32


def harvest_member(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int, k: str,
                   splits: data.Splits, transfer: data.TransferSet, batch_size: int = 1024) -> dict[str, dict]:
    """Member `index`'s logits on transfer/val/test, one chunk file per split under the key's folder; returns
    {split: {"file", "sha256", "shape"}} for the manifest. Harvests of several members can run at once."""
    model = load_member(root, teacher, index, splits)
    chunks = {}
    for split, logits in experiment.harvest(model, splits, transfer, logit_dtype(data_config), batch_size).items():
        payload = files.torch_bytes({"key": k, "index": index, "split": split, "logits": logits.cpu()})
        name = f"member-{index}-{split}.pt"
        files.write_bytes(chunk_dir(root, teacher.name, k) / name, payload)
        chunks[split] = {"file": f"{chunk_dir(root, teacher.name, k).name}/{name}", "sha256": files.sha256(payload),
                         "shape": list(logits.shape)}
    return chunks


def publish(root: Where, data_config: DataConfig, teacher: TeacherConfig, k: str, chunks: list[dict[str, dict]],
            splits: data.Splits) -> dict:
    """Write the manifest that commits the harvested chunks (`chunks[i]`: member i's), with each member's, every
    first-n sub-ensemble's and the whole ensemble's val/test errors computed from the stored logits; then
    delete the chunks of other keys. A harvest killed before this leaves the old manifest (and its chunks) or
    none: never a mix."""
    manifest = {"key": k, "teacher": teacher.name, "data": to_dict(data_config), "dtype": str(logit_dtype(data_config)),
                "chunks": [{s: chunks[i][s] for s in experiment.SPLITS} for i in range(teacher.members)],
                "shapes": {s: [teacher.members, *chunks[0][s]["shape"]] for s in experiment.SPLITS}}
    scored = {s: torch.stack([read_chunk(root, teacher, manifest, i, s) for i in range(teacher.members)])
              for s in ("val", "test")}  # (M, N, C) each: val and test are small
    manifest["members"] = [{"index": i, **scores(splits, {s: v[i] for s, v in scored.items()})}
                           for i in range(teacher.members)]
    first = {n: scores(splits, {s: v[:n].float().mean(0) for s, v in scored.items()})
             for n in range(1, teacher.members + 1)}  # the first n members' mean, n = M the whole ensemble
    manifest["subsets"] = {f"{teacher.name}[:{n}]": e for n, e in first.items() if 1 < n < teacher.members}
    manifest["ensemble"] = first[teacher.members]
    folder, path = cache_paths(root, teacher.name)
    files.write_json(path, manifest)  # written last: the manifest commits the cache
    for old in folder.glob(f"{teacher.name}-*"):
        if old.name != chunk_dir(root, teacher.name, k).name and old.is_dir():
            files.remove_tree(old)
    return manifest


def scores(splits: data.Splits, logits: dict[str, torch.Tensor]) -> dict:
    """val/test error (and PER for speech) of logits {split: (N, C)}."""
    out = {f"{s}_error": error(v, splits.split(s)[1].to(v.device)) for s, v in logits.items()}
    device = splits.test_y.device
    return out | experiment.speech_scores(splits, {s: v.to(device) for s, v in logits.items()})


def harvest(root: Where, data_config: DataConfig, teacher: TeacherConfig, splits: data.Splits,
            transfer: data.TransferSet, batch_size: int = 1024) -> dict:
    """Every member's logits on transfer/val/test, once, one member after another; returns the manifest.
    (The Ray adapter runs `harvest_member` for several members at once, then `publish`.)"""
    k = expected_key(root, data_config, teacher)
    chunks = [harvest_member(root, data_config, teacher, i, k, splits, transfer, batch_size)
              for i in range(teacher.members)]
    return publish(root, data_config, teacher, k, chunks, splits)


FIX = "run `distill teachers SWEEP_FILE` (it trains what is missing and harvests)"


def manifest(root: Where, data_config: DataConfig, teacher: TeacherConfig, want: str | None = None) -> dict:
    """The teacher's cache manifest, refused unless it is for the current key (`want`, if the caller computed
    it already: `expected_key` reads and hashes every member's weights)."""
    path = cache_paths(root, teacher.name)[1]
    if not path.exists():
        raise UserError(f"no logit cache for teacher {teacher.name!r} under {path.parent}: {FIX}")
    found = files.read_json(path)
    want = expected_key(root, data_config, teacher) if want is None else want
    if found.get("key") != want:
        raise UserError(f"logit cache {path} is for another data set, transfer recipe or set of members "
                        f"(key {found.get('key')}, this sweep needs {want}): {FIX}")
    return found


def read_chunk(root: Where, teacher: TeacherConfig, found: dict, index: int, split: str) -> torch.Tensor:
    """Member `index`'s logits on `split`, (N, C), verified against the manifest's hash and key."""
    entry = found["chunks"][index][split]
    path = cache_paths(root, teacher.name)[0] / entry["file"]
    if not path.exists():
        raise UserError(f"logit cache chunk {path} is missing: delete {cache_paths(root, teacher.name)[1]} and {FIX}")
    payload = path.read_bytes()
    if files.sha256(payload) != entry["sha256"]:
        raise UserError(f"logit cache chunk {path} is corrupt (its sha256 does not match {teacher.name}.json): "
                        f"delete it and {FIX}")
    content = files.load_tensors(payload, path)
    if (content.get("key"), content.get("index"), content.get("split")) != (found["key"], index, split):
        raise UserError(f"logit cache chunk {path} does not hold what its manifest names: delete it and {FIX}")
    return content["logits"]


def mean_logits(root: Where, data_config: DataConfig, teacher: TeacherConfig, idx: list[int], split: str,
                want: str | None = None) -> torch.Tensor:
    """The mean of members `idx`'s logits on `split`, (N, C) in the cache's dtype: what a student of teacher
    `name[idx]` learns from or is compared with. Members are read one at a time (each chunk verified), summed in
    fp32: TIMIT's 9 members' transfer logits would be 3.6 GB at once, their mean is 0.4 GB."""
    found = manifest(root, data_config, teacher, want)
    total = None
    for i in idx:
        chunk = read_chunk(root, teacher, found, i, split).float()
        total = chunk if total is None else total.add_(chunk)
    return total.div_(len(idx)).to(logit_dtype(data_config))


def teacher_logits(root: Where, data_config: DataConfig, teachers, uses: dict[str, set[str]],
                   keys: dict[str, str] | None = None) -> dict[tuple[str, str], torch.Tensor]:
    """{(teacher name, split): mean logits (N, C)} for each teacher name students use ('ecnn', 'ecnn[:3]',
    'ecnn[0]') and the splits they use of it (`uses`), each formed once; `keys` as `manifest`'s `want`."""
    configs = {t.name: t for t in teachers}
    members = {t.name: t.members for t in teachers}
    out = {}
    for name, used in uses.items():
        base, idx = parse(name, members)
        for split in sorted(used):
            out[name, split] = mean_logits(root, data_config, configs[base], idx, split, (keys or {}).get(base))
    return out
