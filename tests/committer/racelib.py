"""Processes of the race test: two writers that overwrite one store and a reader, in rounds.

Each round is fenced by two barriers shared by the three processes, so what the test checks
does not depend on how fast anything runs:

* both writers start their job (the committer records the version it starts from), write
  half of their pairs, then wait at ``ready``: both jobs now start from the same version;
* past ``ready``, both finish and publish at once (exactly one wins the compare-and-swap,
  whatever the interleaving), while the reader opens and reads the store;
* everyone waits at ``done`` before the next round.

Results go to JSON files named in the spec (the processes are started with ``spawn``).
"""
from __future__ import annotations

import json
import threading
import traceback
from typing import Any

from kvio import ConcurrentCommitError, KeyValueSystem

KEYS = [b"k%05d" % i for i in range(200)]
# Bounds a wait for a process that died, so a failure cannot hang the test run; never reached
# when all three processes are alive.
BARRIER_TIMEOUT = 120.0


def field(record: Any, name: str) -> Any:
    """A commit record's field, whether the record is a dict or a typed object."""
    return record[name] if isinstance(record, dict) else getattr(record, name)


def value(tag: str, i: int) -> bytes:
    return b"%s-%05d" % (tag.encode(), i)


def write_version(kvs: KeyValueSystem, uri: str, tag: str, mode: str = "overwrite",
                  midway: threading.Barrier | Any | None = None) -> Any:
    """Write every key with values tagged ``tag``; wait at ``midway`` after half of them."""
    half = len(KEYS) // 2
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many((k, value(tag, i)) for i, k in enumerate(KEYS[:half]))
        if midway is not None:
            midway.wait(BARRIER_TIMEOUT)
        writer.put_many((k, value(tag, i + half)) for i, k in enumerate(KEYS[half:]))
    return writer.record


def writer(spec: dict, ready: Any, done: Any) -> None:
    kvs = KeyValueSystem(conf=spec.get("conf"))
    results = []
    try:
        for i in range(spec["rounds"]):
            tag = f"{spec['name']}-{i:03d}"
            try:
                record = write_version(kvs, spec["uri"], tag, midway=ready)
                seq, version = field(record, "seq"), field(record, "version")
                # The version just published is complete (retention 3 keeps it meanwhile).
                with kvs.open_store(spec["uri"], version=version) as published:
                    published.verify()
                    expected = [(k, value(tag, j)) for j, k in enumerate(KEYS)]
                    complete = list(published.items()) == expected
                results.append({"round": i, "tag": tag, "won": True, "seq": seq,
                                "version": version, "complete": complete})
            except ConcurrentCommitError as exc:
                results.append({"round": i, "tag": tag, "won": False,
                                "error": "ConcurrentCommitError", "landed": exc.landed})
            done.wait(BARRIER_TIMEOUT)
    except BaseException as exc:
        # Anything else ends the test: release the other processes instead of leaving them
        # at a barrier, and say what happened.
        ready.abort()
        done.abort()
        results.append({"fatal": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()[-3000:]})
    with open(spec["out"], "w") as f:
        json.dump(results, f)


def reader(spec: dict, ready: Any, done: Any) -> None:
    kvs = KeyValueSystem(conf=spec.get("conf"))
    seen: list[dict] = []
    problems: list[str] = []
    try:
        for i in range(spec["rounds"]):
            ready.wait(BARRIER_TIMEOUT)
            try:  # while both writers publish
                with kvs.open_store(spec["uri"]) as store:
                    items = list(store.items())
                    tags = {v.rsplit(b"-", 1)[0] for _, v in items}
                    ok = [k for k, _ in items] == KEYS and len(tags) == 1 \
                        and len(store) == len(KEYS)
                    tag = tags.pop().decode() if len(tags) == 1 else None
                    ok = ok and all(store.get(KEYS[j]) == value(str(tag), j)
                                    for j in range(0, len(KEYS), 37))
                    store.verify()
                    if not ok:
                        problems.append(f"round {i}: mixed or incomplete version {store.version}")
                    seen.append({"round": i, "seq": field(store.commit, "seq"), "tag": tag})
            except Exception as exc:  # noqa: BLE001 - every failure to read is a problem
                problems.append(f"round {i}: {type(exc).__name__}: {exc}")
            done.wait(BARRIER_TIMEOUT)
    except BaseException as exc:
        ready.abort()
        done.abort()
        problems.append(f"fatal: {type(exc).__name__}: {exc}")
    with open(spec["out"], "w") as f:
        json.dump({"seen": seen, "problems": problems}, f)
