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
