"""Processes of the race test: writers that overwrite one store in lock-step, and a reader that
checks every version it opens is complete. ``python racelib.py ROLE '<json spec>'``."""
from __future__ import annotations

import json
import sys
import time

from kvio import ConcurrentCommitError, KeyValueSystem

KEYS = [b"k%05d" % i for i in range(200)]


def value(tag: str, i: int) -> bytes:
    return b"%s-%05d" % (tag.encode(), i)


def write_version(kvs: KeyValueSystem, uri: str, tag: str, mode: str = "overwrite",
                  pause: float = 0.0) -> dict:
    half = len(KEYS) // 2
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many((k, value(tag, i)) for i, k in enumerate(KEYS[:half]))
        time.sleep(pause)  # a producer that takes a while, so the two jobs overlap
        writer.put_many((k, value(tag, i + half)) for i, k in enumerate(KEYS[half:]))
    return writer.record


def writer(spec: dict) -> None:
    kvs = KeyValueSystem(conf=spec.get("conf"))
    results = []
    for i in range(spec["iterations"]):
        # Both writers wake at the same instant, so they start from the same version.
        time.sleep(max(0.0, spec["t0"] + i * spec["period"] - time.time()))
        tag = f"{spec['name']}-{i:03d}"
        try:
            record = write_version(kvs, spec["uri"], tag, pause=spec["pause"])
            # The version just published is complete (retention 3 keeps it past the next round).
            with kvs.open_store(spec["uri"], version=record["version"]) as published:
                published.verify()
                complete = list(published.items()) == [(k, value(tag, i)) for i, k in enumerate(KEYS)]
            results.append({"tag": tag, "won": True, "seq": record["seq"], "version": record["version"],
                            "complete": complete})
        except ConcurrentCommitError as exc:
            results.append({"tag": tag, "won": False, "error": "ConcurrentCommitError",
                            "landed": exc.landed})
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            results.append({"tag": tag, "won": False, "error": f"{type(exc).__name__}: {exc}"})
    with open(spec["out"], "w") as f:
        json.dump(results, f)


def reader(spec: dict) -> None:
    kvs = KeyValueSystem(conf=spec.get("conf"))
    seen, problems = [], []
    while time.time() < spec["until"]:
        try:
            with kvs.open_store(spec["uri"]) as store:
                items = list(store.items())
                tags = {v.rsplit(b"-", 1)[0] for _, v in items}
                ok = [k for k, _ in items] == KEYS and len(tags) == 1 and len(store) == len(KEYS)
                tag = tags.pop().decode() if len(tags) == 1 else None
                ok = ok and all(store.get(KEYS[i]) == value(tag, i) for i in range(0, len(KEYS), 37))
                store.verify()
                if not ok:
                    problems.append(f"mixed or incomplete version {store.version}: {sorted(tags)[:5]}")
                seen.append({"seq": store.commit["seq"], "tag": tag})
        except Exception as exc:  # noqa: BLE001 - every failure to read is a problem
            problems.append(f"{type(exc).__name__}: {exc}")
    with open(spec["out"], "w") as f:
        json.dump({"seen": seen, "problems": problems}, f)


if __name__ == "__main__":
    {"writer": writer, "reader": reader}[sys.argv[1]](json.loads(sys.argv[2]))
