"""Objects a sweep names by import path, "package.module:name": a user's own model factory or data-set loader.

The path is the name, resolved where it is used: there is no registry to add to and nothing to import first.
"""

from __future__ import annotations

import importlib
import re

from distill.errors import UserError

PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def is_path(name: str) -> bool:
    """Whether `name` is an import path ('torchvision.models:resnet18') rather than a built-in name ('cnn')."""
    return ":" in name


def resolve(path: str, what: str):
    """The callable that `path` ('package.module:name', the name maybe dotted) names; a malformed path, a module
    that cannot be imported or a missing name is a one-line UserError that starts with `what`."""
    if not PATH.fullmatch(path):
        raise UserError(f"{what} {path!r} is not an import path: write 'package.module:function'")
    module_name, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"{what} {path!r}: no module named {e.name!r}: install it, or put its folder on "
                        "PYTHONPATH") from None
    except Exception as e:  # the user's module fails as it is imported
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"{what} {path!r}: importing {module_name} failed ({type(e).__name__}"
                        f"{': ' + detail if detail else ''}): fix that module") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what} {path!r}: {module_name} has no {attr!r}: check the name after the ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{what} {path!r} names a {type(obj).__name__}, not a function or class to call")
    return obj
