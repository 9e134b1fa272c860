"""StoreReader behaves like a good read-only Mapping, and like a closed file after close()
(issue 9: lifecycle and API defects found by running Alluxio's key-value tests)."""
from __future__ import annotations

from collections.abc import ItemsView, KeysView, ValuesView

import pytest

from kvio import InvalidArgumentError, KeyValueSystem, ReaderClosedError

PAIRS = [(b"k%03d" % i, b"v%03d" % i) for i in range(300)]


@pytest.fixture(params=["disjoint", "merged"])
def store(request, tmp_path):
    kvs = KeyValueSystem(conf={"kvio.partition.size.max": "2KB"})
    uri = str(tmp_path / "s")
    if request.param == "disjoint":
        with kvs.create_store(uri) as w:
            w.put_many(PAIRS)
        return kvs, uri, dict(PAIRS)
    with kvs.create_store(uri) as w:
        w.put_many([(k, b"old") for k, _ in PAIRS])
    with kvs.create_store(str(tmp_path / "newer")) as w:
        w.put_many(PAIRS[::2])
    kvs.merge_store(str(tmp_path / "newer"), uri)
    return kvs, uri, {**{k: b"old" for k, _ in PAIRS}, **dict(PAIRS[::2])}


def test_views_are_views_whatever_the_arguments(store):
    kvs, uri, model = store
    with kvs.open_store(uri) as r:
        assert isinstance(r.items(), ItemsView) and isinstance(r.keys(), KeysView)
        assert isinstance(r.values(), ValuesView)
        assert list(r.values()) == [model[k] for k in sorted(model)]
        ranged = r.items(start=b"k010", stop=b"k020")
        assert list(ranged) == list(ranged)  # re-iterable, not a one-shot generator
        assert list(ranged) == [(k, model[k]) for k in sorted(model) if b"k010" <= k < b"k020"]
        assert len(r.keys(prefix=b"k01")) == 10
        assert list(r.values(prefix=b"k00")) == [model[b"k%03d" % i] for i in range(10)]
        assert (b"k001", model[b"k001"]) in r.items()
        assert len(r) == len(model) and len(r) == len(model)  # counted once, then cached
        assert r.info()["count"] == len(model)


def test_values_do_not_probe_per_key(store, monkeypatch):
    kvs, uri, model = store
    with kvs.open_store(uri) as r:
        monkeypatch.setattr(type(r), "__getitem__", lambda *a: pytest.fail("values() looked a key up"))
        assert list(r.values()) == [model[k] for k in sorted(model)]


def test_use_after_close_raises(store):
    kvs, uri, _ = store
    r = kvs.open_store(uri)
    assert r[b"k001"]
    r.close()
    r.close()  # close after close is fine
    for use in (lambda: r[b"k001"], lambda: r.get(b"k001"), lambda: r.get(b"zzz"),
                lambda: r.get_many([b"k001"]), lambda: list(r), lambda: list(r.items()),
                lambda: len(r), lambda: r.verify(), lambda: list(r.batches()),
                lambda: b"k001" in r):
        with pytest.raises(ReaderClosedError, match="closed"):
            use()


def test_bad_arguments_are_invalid_argument_errors(store):
    kvs, uri, _ = store
    with kvs.open_store(uri) as r:
        for bad in (lambda: r.get(12), lambda: r.get_many([b"a", 3.5]),
                    lambda: list(r.items(start=object()))):
            with pytest.raises(InvalidArgumentError):
                bad()
    with pytest.raises(InvalidArgumentError):
        kvs.open_store(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # InvalidArgumentError is also a ValueError
        kvs.open_store("")
