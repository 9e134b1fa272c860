"""``--storage-option KEY=VALUE``: fsspec storage options (credentials, endpoints, client
settings) for the stores a command opens, as ``storage_options=`` does in Python.

A value is read as JSON when it is valid JSON (``true``, ``3``, ``{"a": 1}``), else taken as
text; a dotted key sets a nested option (``client_kwargs.region_name=eu-west-1`` gives
``{"client_kwargs": {"region_name": "eu-west-1"}}``). Without any, the filesystem's own
defaults apply (for S3 the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` environment, which botocore reads itself).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgumentError


def storage_option_item(text: str) -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` argument.

    Args:
        text: the argument.

    Returns:
        (key, value), the value decoded as JSON when it is JSON, else the text.

    Raises:
        argparse.ArgumentTypeError: no ``=`` or an empty key.
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or any(not part for part in name.strip().split(".")):
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        decoded: Any = json.loads(value)
    except ValueError:
        decoded = value
    return name.strip(), decoded


def build_storage_options(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The options dictionary of parsed ``--storage-option`` items (later ones win).

    Args:
        items: (key, value) pairs; dotted keys nest.

    Returns:
        The storage options.

    Raises:
        InvalidArgumentError: a key is used both as a value and as a nested group.
    """
    options: dict[str, Any] = {}
    for name, value in items:
        *groups, last = name.split(".")
        target = options
        for group in groups:
            nested = target.setdefault(group, {})
            if not isinstance(nested, dict):
                raise InvalidArgumentError(f"--storage-option {group!r} is a value, not a group "
                                           f"(in {name!r})")
            target = nested
        target[last] = value
    return options
