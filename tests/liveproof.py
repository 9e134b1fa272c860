"""A reader process of the live-store proof (tests/test_live_proof.py).

    python -m tests.liveproof URI WORKDIR NAME SEED

Opens ``URI`` with ``follow=True`` and, until the writer has finished and this reader serves
the newest version, does random gets, batch gets and scans: inside snapshots (answers checked
against the version the snapshot names) and directly on the live store (answers checked
against some published version). Each answer is written to ``WORKDIR/NAME.jsonl`` as a digest
for the parent to check; an exception ends the process with its traceback in
``WORKDIR/NAME.error``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import traceback

import kvio

KEYS = [b"k%03d" % i for i in range(400)]
ABSENT = [b"k400", b"a", b"zz", b""]
PREFIXES = [b"k0", b"k1", b"k2", b"k3", b"k12", b"k399", b"x"]
CONF = {"kvio.follow.interval": "0.05", "kvio.gc.grace": "1s", "kvio.read.open.partitions": "1"}
FINISH_SECONDS = 60.0


def digest(answer: object) -> str:
    """The digest of an answer: bytes as hex inside JSON (the parent computes the same)."""
    def plain(x: object) -> object:
        if isinstance(x, bytes):
            return x.hex()
        if isinstance(x, (list, tuple)):
            return [plain(i) for i in x]
        return x
    return hashlib.sha1(json.dumps(plain(answer)).encode()).hexdigest()


def one_round(live: kvio.live.LiveStore, rng: random.Random, out) -> str:
    keys = rng.sample(KEYS, 20) + rng.sample(ABSENT, 2)
    prefix = rng.choice(PREFIXES)
    start, stop = sorted(rng.sample(KEYS, 2))
    with live.snapshot() as reader:  # one request: every call answers from reader.version
        version = reader.version
        records = [
            ("get_many", [k.hex() for k in keys], digest(reader.get_many(keys))),
            ("get", keys[0].hex(), digest(reader.get(keys[0]))),
            ("prefix", prefix.hex(), digest(list(reader.items(prefix=prefix)))),
            ("range", [start.hex(), stop.hex()], digest(list(reader.items(start=start, stop=stop)))),
        ]
        for op, args, dig in records:
            out.write(json.dumps({"v": version, "op": op, "args": args, "d": dig}) + "\n")
    # Directly on the live store: each call answers from one version (which one is not said).
    direct = [
        ("get_many", [k.hex() for k in keys], digest(live.get_many(keys))),
        ("get", keys[1].hex(), digest(live.get(keys[1]))),
        ("prefix", prefix.hex(), digest(list(live.items(prefix=prefix)))),
    ]
    for op, args, dig in direct:
        out.write(json.dumps({"v": None, "op": op, "args": args, "d": dig}) + "\n")
    return version


def main(argv: list[str]) -> int:
    uri, workdir, name, seed = argv[0], argv[1], argv[2], int(argv[3])
    rng = random.Random(seed)
    done_file = os.path.join(workdir, "done.json")
    try:
        kvs = kvio.KeyValueSystem(conf=CONF)
        with kvs.open_store(uri, follow=True) as live, \
                open(os.path.join(workdir, f"{name}.jsonl"), "w") as out:
            open(os.path.join(workdir, f"{name}.ready"), "w").close()
            final = None
            deadline = None
            while True:
                version = one_round(live, rng, out)
                if final is None and os.path.exists(done_file):
                    with open(done_file) as handle:
                        final = json.load(handle)["version"]
                    deadline = time.monotonic() + FINISH_SECONDS
                if final is not None and version == final:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise AssertionError(f"still on {live.version}, not the newest {final}; "
                                         f"last error {live.last_error!r}")
            summary = {"final": live.version, "swaps": live.swaps,
                       "swap_errors": live.swap_errors,
                       "last_error": None if live.last_error is None else str(live.last_error)}
        with open(os.path.join(workdir, f"{name}.summary.json"), "w") as handle:
            json.dump(summary, handle)
    except BaseException:
        with open(os.path.join(workdir, f"{name}.error"), "w") as handle:
            handle.write(traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
