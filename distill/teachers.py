"""Teachers by name: a whole ensemble ("ecnn"), its first n members ("ecnn[:4]"), or one member ("ecnn[2]").

Ensembles are formed from per-member logits, so any sub-ensemble costs a mean, not a forward pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from distill.errors import UserError

NAME = re.compile(r"^(?P<base>[A-Za-z0-9_-]+)(?:\[(?P<one>\d+)\]|\[:(?P<first>\d+)\])?$")


def parse(name: str, members: Mapping[str, int], known: Sequence[str] = ()) -> tuple[str, list[int]]:
    """('ecnn[:4]', {'ecnn': 9}) -> ('ecnn', [0, 1, 2, 3]): the teacher config and its member indices."""
    m = NAME.match(name)
    if m is None or m["base"] not in members:
        raise UserError(f"unknown teacher {name!r}: use one of {', '.join(known or members)}, "
                        "optionally with [i] (one member) or [:n] (the first n members)")
    count = members[m["base"]]
    if m["one"] is not None:
        idx = [int(m["one"])]
    elif m["first"] is not None:
        idx = list(range(int(m["first"])))
    else:
        idx = list(range(count))
    if not idx or idx[-1] >= count:
        raise UserError(f"teacher {name!r} asks for members {idx} but {m['base']!r} has {count}: "
                        f"use indices below {count}")
    return m["base"], idx


def member_files(spec: str | Sequence[str], members: int, what: str) -> list[str]:
    """Each member's file of a teacher made elsewhere (its weights or its logits), from what the config gives:
    one path or URI (one member), a tuple of one per member, or one pattern in which {i} is the member's index
    ('resnet-{i}.pt': member 0 is resnet-0.pt). `what` names the setting in the error a wrong count gives."""
    if isinstance(spec, str):
        if "{i}" in spec:
            return [spec.replace("{i}", str(i)) for i in range(members)]
        spec = (spec,)
    if len(spec) != members:
        raise UserError(f"{what} names {len(spec)} file(s) for {members} member(s): give one per member, "
                        "or one pattern with {i} for the member's index (e.g. 'resnet-{i}.pt')")
    return list(spec)
