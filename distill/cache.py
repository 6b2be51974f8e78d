"""Teacher members on disk and the teacher-logit cache.

Layout under a sweep's directory:
    teachers/<teacher>/member-<i>/model.pt      final weights (written atomically)
    teachers/<teacher>/member-<i>/result.json   val/test error, config, sha256 of model.pt: the "done" mark
    teachers/<teacher>/member-<i>/state-<id>.pt checkpoint while it trains (id: its identity), then removed
    cache/<teacher>/member-<i>-<w>-<split>.pt   {"member", "data", "index", "split", "logits": (N, C)}: member i
                                                (weights hash w) on one split (transfer, val, test), fp16 when
                                                DataConfig.compact; harvested right after the member trained
    cache/<teacher>/member-<i>-<w>.json         that member's chunks and their sha256: written last
    cache/<teacher>.json                        manifest: key, each chunk's file and sha256, each member's,
                                                each first-n sub-ensemble's and the ensemble's val/test error
The cache key hashes the data set, split, transfer-set recipe and every member's weights, so a changed
recipe or a retrained member is a miss, never a stale hit. Chunks keep every object far below the 5 GB of
a single S3 copy (TIMIT's 9 members: 0.4 GB each) and let members be harvested in parallel, each where it was
trained; a retrained member re-harvests only itself. Each chunk is verified (sha256, content) as it is read.
The manifest, written last, commits a harvest.
"""

from __future__ import annotations

import functools
import io
import os
import time

import numpy as np
import torch
from torch import nn

from distill import data, experiment, files, models
from distill.config import DataConfig, TeacherConfig, to_dict
from distill.errors import UserError
from distill.files import Location, Where
from distill.teachers import member_files, parse
from distill.train import Fit, error, infer


def member_dir(root: Where, teacher: str, index: int) -> Location:
    return files.location(root) / "teachers" / teacher / f"member-{index}"


def data_identity(config: DataConfig) -> dict:
    """What decides the data a net learns from and is scored on: everything but where the files lie (moving
    the data, or mounting it elsewhere on a node, changes nothing). For `npz` the root is the data file itself,
    so it stays: another file is other data (a file rewritten in place is not seen: give new data a new name)."""
    # Nor the students' transfer recipes: each student's config names its own (`transfer_views`).
    drop = {"transfers"} | (set() if config.name == "npz" else {"root"})
    return {k: v for k, v in to_dict(config).items() if k not in drop}


def harvest_identity(config: DataConfig) -> dict:
    """What decides the inputs a teacher's logits are harvested on: the data, and the views of the largest student
    transfer set where it has more than the teachers' own (the teachers train on those either way)."""
    extra = config.harvest_views() != config.views
    return data_identity(config) | ({"harvest_views": config.harvest_views()} if extra else {})


def member_identity(data_config: DataConfig, teacher: TeacherConfig, index: int, sha: str | None = None) -> dict:
    """What decides member `index`'s weights: the data, the architecture, its training and seed, and how it is
    sharded (workers). Not its name, the ensemble's size or the resources it ran on.

    A member made elsewhere (`source`: weights or logits) is decided by its file's content instead of training:
    the sha256 of member `index`'s file (`sha`, if the caller read it already), not its path."""
    net = {k: v for k, v in to_dict(teacher).items()
           if k not in ("name", "members", "cpus_per_worker", "gpus_per_worker", "weights", "logits")}
    kind = source(teacher)
    if kind == "trained":
        return {"data": data_identity(data_config), "teacher": net, "index": index}
    # Nothing of distill's training decides an imported net; logits need no net at all.
    net = {} if kind == "logits" else {k: net[k] for k in ("arch", "arch_args")}
    sha = sha or file_sha256(member_file(teacher, index))
    return {"data": data_identity(data_config), "teacher": net, "index": index, f"{kind}_sha256": sha}


def source(teacher: TeacherConfig) -> str:
    """'trained' (distill trains the members), 'weights' (it loads each member's weights) or 'logits' (it is
    given each member's logits)."""
    return "weights" if teacher.weights is not None else "logits" if teacher.logits is not None else "trained"


def member_file(teacher: TeacherConfig, index: int) -> str:
    """Member `index`'s weights or logits file of a teacher made elsewhere (`TeacherConfig.weights`/`logits`)."""
    kind = source(teacher)
    return member_files(getattr(teacher, kind), teacher.members, f"TeacherConfig(name={teacher.name!r}).{kind}")[index]


def read_file(path: str, what: str) -> bytes:
    where = files.location(path)
    if not where.exists() or where.is_dir():
        raise UserError(f"{what} file {path} does not exist: fix the path in the sweep file")
    return where.read_bytes()


def file_sha256(path: str) -> str:
    """The sha256 of a member's file, read again only when its size or time changed (each phase asks for every
    member's identity, and a ResNet's weights are tens of megabytes, maybe in a bucket)."""
    where = files.location(path)
    if not where.exists():
        raise UserError(f"teacher file {path} does not exist: fix the path in the sweep file")
    info = where.fs.get_file_info(where.path) if where.remote else os.stat(where.path)
    stamp = (info.size, info.mtime) if where.remote else (info.st_size, info.st_mtime_ns)
    return _sha256(str(where), stamp)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, stamp: tuple) -> str:
    return files.sha256(files.location(path).read_bytes())


def member_result(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int) -> tuple[dict | None, str]:
    """(the finished member's result, "") if it was trained as the sweep now asks, else (None, why not).
    A damaged member is refused."""
    d = member_dir(root, teacher.name, index)
    if not (d / "result.json").exists():
        return None, "not trained yet"
    result = files.read_json(d / "result.json")
    weights = d / "model.pt"  # a teacher given as logits has none: its chunks are verified as they are read
    damaged = not weights.exists() or files.sha256(weights.read_bytes()) != result.get("sha256")
    if source(teacher) != "logits" and damaged:
        raise UserError(f"teacher member {d} is damaged (model.pt missing or does not match result.json): "
                        f"delete {d} and run `distill teachers` again to retrain it")
    changed = differences(result.get("identity", {}), member_identity(data_config, teacher, index))
    if changed:
        return None, f"trained with other settings ({', '.join(changed)} changed)"
    return result, ""


def member_state(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int) -> Location:
    """Member `index`'s checkpoint while it trains, named by its identity: a restart resumes only a member
    trained with the same settings. Removed once the member is saved."""
    identity = files.digest(member_identity(data_config, teacher, index))[:16]
    return member_dir(root, teacher.name, index) / f"state-{identity}.pt"


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
    files.remove(member_state(root, data_config, teacher, index))
    return result


def load_member(root: Where, teacher: TeacherConfig, index: int, splits: data.Splits) -> nn.Module:
    model = experiment.build_member(teacher, index, splits)
    state = files.torch_load(member_dir(root, teacher.name, index) / "model.pt")
    model.load_state_dict(state)
    return model.to(splits.train_x.device)


def check_member(teacher: TeacherConfig, index: int, splits: data.Splits,
                 transfer: data.TransferSet) -> tuple[bytes, nn.Module | dict[str, torch.Tensor]]:
    """Member `index` of a teacher made elsewhere, read and checked against the data before any work: (its file's
    bytes, the net with its weights loaded on the data's device, or its logits {split: (N, C)} fp32). A file that
    does not fit (other keys or shapes, another class or row count) is a one-line UserError."""
    path, kind = member_file(teacher, index), source(teacher)
    payload = read_file(path, f"teacher {teacher.name!r} member {index}'s {kind}")
    if kind == "logits":
        return payload, read_logits(teacher, path, payload, splits, transfer)
    state = files.load_tensors(payload, path)  # weights_only: a file that would run code is refused
    model = experiment.build_member(teacher, index, splits)  # its outputs are checked to be (N, classes)
    load_weights(model, state, path, teacher.arch)
    return payload, model.to(splits.train_x.device)


def load_weights(model: nn.Module, state, path: str, arch: str) -> None:
    """`state` (a state dict) into `model`, or one line on what does not fit: missing or unexpected keys, shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        checkpoint = isinstance(state, dict) and "state_dict" in state
        hint = " (a checkpoint: save its 'state_dict' entry alone)" if checkpoint else ""
        raise UserError(f"weights file {path} holds a {type(state).__name__} that is not a state dict{hint}: save "
                        "torch.save(model.state_dict(), path)")
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (the net's is {tuple(v.shape)})" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    wrong = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
             (("missing keys", missing), ("unexpected keys", unexpected), ("tensors of another shape", shapes))
             if keys]
    if wrong:
        raise UserError(f"weights file {path} does not fit architecture {arch!r}: {', '.join(wrong)}: save the "
                        "state_dict() of the net that arch and arch_args build")
    model.load_state_dict(state)


def read_logits(teacher: TeacherConfig, path: str, payload: bytes, splits: data.Splits,
                transfer: data.TransferSet) -> dict[str, torch.Tensor]:
    """{split: (N, C) fp32} of a logits file (torch: a dict of tensors; .npz: arrays), checked: every split of
    experiment.SPLITS, one row per transfer/val/test input in order, one column per class, finite values."""
    if path.endswith(".npz"):
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:  # no pickles: logits, not code
            found = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    else:
        found = files.load_tensors(payload, path)
    if not isinstance(found, dict) or any(s not in found for s in experiment.SPLITS):
        raise UserError(f"logits file {path} must hold {', '.join(experiment.SPLITS)} (one (N, C) array each), "
                        f"not {sorted(found) if isinstance(found, dict) else type(found).__name__}")
    rows = {"transfer": len(transfer.x), "val": len(splits.val_y), "test": len(splits.test_y)}
    out = {}
    for split, n in rows.items():
        v = found[split]
        if not isinstance(v, torch.Tensor) or v.dim() != 2 or not v.is_floating_point():
            raise UserError(f"logits file {path}: {split!r} must be a 2-D float array (N, C), not "
                            f"{getattr(v, 'shape', type(v).__name__)}")
        if tuple(v.shape) != (n, splits.classes):
            raise UserError(f"logits file {path}: {split!r} has shape {tuple(v.shape)}, but the {split} split has "
                            f"{n} inputs of {splits.classes} classes: compute ({n}, {splits.classes}) logits on "
                            f"experiment.prepare(sweep.data)'s {split} inputs, in their order")
        if not torch.isfinite(v).all():
            raise UserError(f"logits file {path}: {split!r} holds NaN or infinite values: recompute them")
        out[split] = v.float()
    return out


def import_member(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int, splits: data.Splits,
                  transfer: data.TransferSet, checked: tuple | None = None, batch_size: int = 1024) -> dict:
    """Member `index` of a teacher made elsewhere, made a member as if distill had trained it: for weights, the
    file copied to model.pt (so its sha256 is the member's) and its logits harvested; for logits, their chunks
    written from the file. Its result.json records the file, its sha256 (also in the identity: a changed file is
    imported again) and the val/test error measured here. `checked`: what `check_member` returned, if called."""
    payload, content = checked or check_member(teacher, index, splits, transfer)
    kind, sha, d = source(teacher), files.sha256(payload), member_dir(root, teacher.name, index)
    if kind == "weights":
        files.write_bytes(d / "model.pt", payload)
        logits = {"val": infer(content, splits.val_x), "test": infer(content, splits.test_x)}
        facts = models.facts(content, splits.shape)
    else:
        logits, facts = content, {"architecture": None, "params": None, "hidden_units": None}
    result = {"teacher": to_dict(teacher), "index": index, "sha256": sha, "source": kind,
              "file": member_file(teacher, index), **facts,
              "identity": member_identity(data_config, teacher, index, sha),
              "val_error": error(logits["val"], splits.val_y), "test_error": error(logits["test"], splits.test_y),
              "finished_at": time.time()}
    files.write_json(d / "result.json", result)  # written last: its presence means "done"
    harvest_imported(root, data_config, teacher, index, sha, content, splits, transfer, batch_size)
    return result


def harvest_imported(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int, sha: str,
                     content: nn.Module | dict[str, torch.Tensor], splits: data.Splits,
                     transfer: data.TransferSet, batch_size: int = 1024) -> dict[str, dict]:
    """The chunks of an imported member (its weights hash to `sha`): harvested from its net, or written from
    its logits (`content`, as `check_member` gives it)."""
    if isinstance(content, nn.Module):
        return harvest_member(root, data_config, teacher, index, content, sha, splits, transfer, batch_size)
    dtype = logit_dtype(data_config)
    return write_chunks(root, data_config, teacher, index, sha, {s: v.to(dtype) for s, v in content.items()})


def key(data_config: DataConfig, teacher: TeacherConfig, shas: list[str]) -> str:
    """Content hash of (data identity, the teacher's settings, each member's weights)."""
    return files.digest({"data": harvest_identity(data_config),
                   "teacher": member_identity(data_config, teacher, 0)["teacher"], "members": shas})


def cache_paths(root: Where, teacher: str) -> tuple[Location, Location]:
    """(the folder of the teacher's chunks, its manifest)."""
    d = files.location(root) / "cache"
    return d / teacher, d / f"{teacher}.json"


def chunk_name(index: int, sha: str, split: str = "") -> str:
    """A chunk is named by its member's weights: it is never rewritten with other content, so an old manifest's
    chunks stay whole while new ones are written."""
    return f"member-{index}-{sha[:16]}" + (f"-{split}.pt" if split else ".json")


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


def harvest_member(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int, model: nn.Module,
                   sha: str, splits: data.Splits, transfer: data.TransferSet,
                   batch_size: int = 1024) -> dict[str, dict]:
    """Member `index`'s logits (its weights hash to `sha`) on transfer/val/test: one chunk file per split, then the
    member's record of them (written last: its presence means harvested); returns {split: {"file", "sha256",
    "shape"}}. Runs where the member was trained, right after it, so members harvest while others train."""
    logits = experiment.harvest(model, splits, transfer, logit_dtype(data_config), batch_size)
    return write_chunks(root, data_config, teacher, index, sha, logits)


def write_chunks(root: Where, data_config: DataConfig, teacher: TeacherConfig, index: int, sha: str,
                 logits: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Member `index`'s logits {split: (N, C)} as chunk files, then the member's record of them (written last)."""
    folder = cache_paths(root, teacher.name)[0]
    chunks = {}
    for split, values in logits.items():
        payload = files.torch_bytes({"member": sha, "data": files.digest(harvest_identity(data_config)), "index": index,
                                     "split": split, "logits": values.cpu()})
        files.write_bytes(folder / chunk_name(index, sha, split), payload)
        chunks[split] = {"file": chunk_name(index, sha, split), "sha256": files.sha256(payload),
                         "shape": list(values.shape), "member": sha}
    files.write_json(folder / chunk_name(index, sha), chunks)
    return chunks


def harvested(root: Where, teacher: TeacherConfig, index: int, sha: str) -> dict[str, dict] | None:
    """The chunks `harvest_member` recorded for member `index` with weights `sha`, or None if it never finished."""
    record = cache_paths(root, teacher.name)[0] / chunk_name(index, sha)
    return files.read_json(record) if record.exists() else None


def publish(root: Where, data_config: DataConfig, teacher: TeacherConfig, k: str, members: list[dict],
            splits: data.Splits) -> dict:
    """Write the manifest that commits the members' harvested chunks (`members`: their results, from `ready`),
    with each member's, every first-n sub-ensemble's and the whole ensemble's val/test errors computed from the
    stored logits; then delete the chunks no manifest names. A harvest killed before this leaves the old manifest
    (and its chunks) or none: never a mix."""
    chunks = [harvested(root, teacher, i, m["sha256"]) for i, m in enumerate(members)]
    if None in chunks:
        raise UserError(f"teacher {teacher.name!r}: member(s) {[i for i, c in enumerate(chunks) if c is None]} "
                        f"have no harvested logits: {FIX}")
    manifest = {"key": k, "teacher": teacher.name, "data": to_dict(data_config),
                "identity": files.digest(harvest_identity(data_config)), "dtype": str(logit_dtype(data_config)),
                "chunks": [{s: c[s] for s in experiment.SPLITS} for c in chunks],
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
    named = {c[s]["file"] for c in chunks for s in experiment.SPLITS} | {
        chunk_name(i, m["sha256"]) for i, m in enumerate(members)}
    for old in folder.glob("member-*"):  # other members' weights (retrained, or of another data set): unused
        if old.name not in named:
            files.remove(old)
    return manifest


def scores(splits: data.Splits, logits: dict[str, torch.Tensor]) -> dict:
    """val/test error of logits {split: (N, C)}, and for speech the decoded PER (weights chosen on val) and the
    other speech scores of `experiment.speech_scores`."""
    out = {f"{s}_error": error(v, splits.split(s)[1].to(v.device)) for s, v in logits.items()}
    device = splits.test_y.device
    return out | experiment.speech_scores(splits, {s: v.to(device) for s, v in logits.items()})


def harvest(root: Where, data_config: DataConfig, teacher: TeacherConfig, indices: list[int], splits: data.Splits,
            transfer: data.TransferSet, batch_size: int = 1024) -> None:
    """Harvest members `indices` that were trained before (their harvest missing), one after another."""
    for i in indices:
        result, _ = member_result(root, data_config, teacher, i)
        harvest_member(root, data_config, teacher, i, load_member(root, teacher, i, splits), result["sha256"], splits,
                       transfer, batch_size)


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
    want = (entry["member"], found["identity"], index, split)
    if tuple(content.get(k) for k in ("member", "data", "index", "split")) != want:
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
        chunk = read_chunk(root, teacher, found, i, split)  # (N, C), fp16 when compact
        total = torch.zeros(chunk.shape, dtype=torch.float32) if total is None else total
        for rows in range(0, len(chunk), 1 << 16):  # converted block by block: no fp32 copy of a whole chunk
            total[rows:rows + (1 << 16)] += chunk[rows:rows + (1 << 16)]
        del chunk
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
