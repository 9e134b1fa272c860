"""A second, minimal reader of kvio stores, written from docs/FORMAT.md alone.

It imports nothing from kvio and shares no code with it: plain ``struct`` and ``re``, ``xxhash``
for XXH3-64, and pyarrow only as a Zstandard / LZ4-frame *stream* decoder (a different code path
from kvio's one-shot block decompression, and one that does not need to know the output size).
Files are read whole into memory; speed is not the point. Section numbers (§) refer to
docs/FORMAT.md. If kvio and this reader disagree, the spec is wrong or kvio is.

Errors are this module's own classes; tests map them to kvio's (``KIND``).
"""
from __future__ import annotations

import heapq
import json
import os
import re
import struct
from bisect import bisect_right

import pyarrow as pa
import xxhash


class SpecError(Exception):
    """Base of the errors below; ``file`` is the path of the file at fault (if any)."""

    kind = "error"

    def __init__(self, message: str, file: str | None = None):
        super().__init__(f"{message} [{file}]" if file else message)
        self.file = file


class Corrupt(SpecError):
    kind = "corrupt"


class Unsupported(Corrupt):
    kind = "unsupported"


class NotFound(SpecError):
    kind = "not-found"


class Incomplete(SpecError):
    kind = "incomplete"


class NotAStore(SpecError):
    kind = "not-a-store"


def xxh3(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data)


def pad8(n: int) -> int:
    return -(-n // 8) * 8


def align4096(n: int) -> int:
    return -(-n // 4096) * 4096


def unhex(text, file: str) -> bytes:
    """A key written in JSON: lowercase hex, two digits per byte ("" = the empty key)."""
    if not isinstance(text, str) or not re.fullmatch(r"(?:[0-9a-f]{2})*", text):
        raise Corrupt(f"not a lowercase hex key: {text!r}", file)
    return bytes.fromhex(text)


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---- §2.1 documents ------------------------------------------------------------------------
HEADER_LINE = re.compile(rb"([A-Z]+) ([1-9][0-9]{0,9}) ([0-9a-f]{16})")
KNOWN_VERSIONS = (1,)


def read_document(path: str, kind: str, versions=None) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"\n")
    line = HEADER_LINE.fullmatch(data[:end]) if end >= 0 else None
    if line is None:                                                   # step 1
        raise Corrupt("bad document header line", path)
    if line.group(1).decode() != kind:                                 # step 2
        raise Corrupt(f"expected a {kind} document", path)
    if int(line.group(2)) not in (versions or KNOWN_VERSIONS):        # step 3
        raise Unsupported(f"document format version {int(line.group(2))}", path)
    body = data[end + 1:]
    if xxh3(body) != int(line.group(3), 16):                           # step 4
        raise Corrupt("document checksum mismatch", path)
    try:                                                               # step 5
        doc = json.loads(body.decode("utf-8"))
    except ValueError:
        raise Corrupt("document body is not JSON", path) from None
    if not isinstance(doc, dict):
        raise Corrupt("document body is not an object", path)
    return doc


# ---- §1 the store directory ------------------------------------------------------------------
RECORD_NAME = re.compile(r"([0-9]{10})\.commit", re.ASCII)
VERSION_NAME = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)


def is_version_name(name) -> bool:
    return isinstance(name, str) and bool(VERSION_NAME.fullmatch(name)) and name not in (".", "..")


RECORD_FIELDS = {  # §1.3: the types of the informational fields, when present and not null
    "op": lambda v: isinstance(v, str), "job": lambda v: isinstance(v, str),
    "time": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "mode": lambda v: isinstance(v, str), "partitions": lambda v: is_int(v) and v >= 0,
    "source": is_version_name,
    "damaged": lambda v: isinstance(v, list) and all(is_int(s) and s >= 1 for s in v),
}


def check_marker(root: str) -> None:
    """§1.2 (this reader checks it at open, which the spec allows)."""
    path = os.path.join(root, "_kvio_store")
    if not os.path.isfile(path):
        raise Corrupt("store marker is missing", path)
    if read_document(path, "KVIOSTORE").get("format") != "kvio-store":
        raise Corrupt("store marker names another format", path)


def txn_committed(root: str, txn, path: str) -> bool:
    """§1.5: whether the transaction of a version 2 record decided "committed"."""
    if not isinstance(txn, dict) or not isinstance(txn.get("id"), str) \
            or not isinstance(txn.get("record"), str):
        raise Corrupt("record field txn is malformed", path)
    for where in (os.path.join(root, "_txns", txn["id"] + ".txn"), txn["record"]):
        if os.path.isfile(where):
            doc = read_document(where, "KVIOTXN")
            if doc.get("id") != txn["id"] or doc.get("status") not in ("committed", "aborted"):
                raise Corrupt("transaction record is malformed", where)
            return doc["status"] == "committed"
    return False


def current_record(root: str) -> tuple[int, dict]:
    """§1.3: the highest commit record, checked; or the error that says why there is none."""
    commits = os.path.join(root, "_commits")
    names = os.listdir(commits) if os.path.isdir(commits) else []
    seqs = sorted(int(m.group(1)) for m in map(RECORD_NAME.fullmatch, names) if m)
    while seqs:
        seq = seqs.pop()
        path = os.path.join(commits, f"{seq:010d}.commit")
        record = read_document(path, "KVIOCOMMIT", versions={1, 2})
        if not is_int(record.get("seq")) or record["seq"] != seq:
            raise Corrupt(f"record seq {record.get('seq')!r} differs from its name", path)
        version = record.get("version")
        if version is not None and not is_version_name(version):
            raise Corrupt(f"record names an invalid version {version!r}", path)
        for name, ok in RECORD_FIELDS.items():
            if record.get(name) is not None and not ok(record[name]):
                raise Corrupt(f"record field {name} has the wrong type", path)
        if "txn" in record and not txn_committed(root, record["txn"], path):
            continue  # §1.3: void, go on with the record below it
        if version is None:
            raise NotFound("store was deleted", path)
        return seq, record
    if not os.path.exists(root):
        raise NotFound("nothing at this path", root)
    if os.path.exists(os.path.join(root, "_kvio_store")):
        raise Incomplete("store never published a version", root)
    if os.path.isdir(root):
        entries = os.listdir(root)
        if entries and all(n in ("_commits", "_versions", "_staging") or n.startswith(".tmp-")
                           for n in entries):
            raise Incomplete("store's first writer died", root)
    raise NotAStore("not a kvio store", root)


# ---- §2.2 the manifest -----------------------------------------------------------------------
def read_manifest(root: str, version: str) -> dict:
    path = os.path.join(root, "_versions", version, "manifest.kvm")
    if not os.path.isfile(path):
        raise Corrupt("manifest of the current version is missing", path)
    doc = read_document(path, "KVIOMANIFEST")
    if doc.get("format") != "kvio-manifest" or doc.get("format_version") != 1:
        raise Corrupt("not a version 1 manifest", path)
    if doc.get("version") != version:
        raise Corrupt("manifest names another version", path)
    if doc.get("routing") != "key-range-priority":
        raise Corrupt(f"unknown routing {doc.get('routing')!r}", path)
    if not isinstance(doc.get("disjoint"), bool) or not (doc.get("count") is None
                                                          or is_int(doc["count"])):
        raise Corrupt("bad disjoint or count", path)
    entries = doc.get("partitions")
    if not isinstance(entries, list):
        raise Corrupt("partitions is not a list", path)
    for e in entries:
        if not isinstance(e, dict):
            raise Corrupt("partition entry is not an object", path)
        p = e.get("path")
        if not isinstance(p, str) or p.startswith("/") or p.count("/") > 1 \
                or any(part in ("", ".", "..") for part in p.split("/")):
            raise Corrupt(f"bad partition path {p!r}", path)
        if not (is_int(e.get("count")) and e["count"] >= 0 and is_int(e.get("size"))
                and isinstance(e.get("footer_checksum"), str)
                and re.fullmatch(r"[0-9a-f]{16}", e["footer_checksum"])):
            raise Corrupt(f"bad partition entry {p!r}", path)
        if not isinstance(e.get("tombstones", False), bool):
            raise Corrupt(f"bad tombstones field in {p!r}", path)
        if e["count"]:
            e["lo"], e["hi"] = unhex(e.get("min_key"), path), unhex(e.get("max_key"), path)
            if e["hi"] < e["lo"]:
                raise Corrupt("max_key below min_key", path)
    live = sorted((e["lo"], e["hi"]) for e in entries if e["count"])
    overlap = any(a[1] >= b[0] for a, b in zip(live, live[1:], strict=False))
    if doc["disjoint"] and (overlap or any(e.get("tombstones") for e in entries if e["count"])):
        raise Corrupt("manifest says disjoint, but key ranges overlap or tombstones exist", path)
    return doc


# ---- §3 partition files ----------------------------------------------------------------------
HEADER = struct.Struct("<8sII")
TRAILER = struct.Struct("<QQQIIQ8s")
MAGIC = b"KVIOPART"
KNOWN_FLAGS = {1: 0, 2: 1}  # §7: version 2 defines bit 0, "every row is a tombstone" (§3.8)


class Partition:
    """One partition file, read whole and checked at open by §3.2 steps 1-11."""

    def __init__(self, path: str, entry: dict | None = None):
        self.path = path
        with open(path, "rb") as f:
            self.data = data = f.read()
        size = len(data)
        if entry is not None and size != entry["size"] or size < 64:                 # 1
            raise Corrupt("file size differs from the manifest, or is too small", path)
        magic, version, flags = HEADER.unpack_from(data, 0)
        if magic != MAGIC:                                                              # 2
            raise Corrupt("bad header magic", path)
        trailer = TRAILER.unpack_from(data, size - 48)
        f_off, f_len, f_sum, t_version, t_flags, t_sum, t_magic = trailer
        if t_magic != MAGIC or xxh3(data[size - 48:size - 16]) != t_sum:               # 3
            raise Corrupt("bad trailer", path)
        if (version, flags) != (t_version, t_flags):                                   # 4
            raise Corrupt("header and trailer disagree", path)
        if version not in KNOWN_FLAGS:                                                  # 5
            raise Unsupported(f"partition format version {version}", path)
        if flags & ~KNOWN_FLAGS[version]:                                               # 6
            raise Unsupported(f"unknown flags {flags:#x}", path)
        self.tombstones = bool(flags & 1)                                               # §3.8
        if entry is not None and entry.get("tombstones", False) is not self.tombstones:
            raise Corrupt("tombstone flag differs from the manifest", path)
        if f_off + f_len + 48 != size:                                                  # 7
            raise Corrupt("footer position does not match the size", path)
        if entry is not None and f"{f_sum:016x}" != entry["footer_checksum"]:           # 8
            raise Corrupt("footer checksum differs from the manifest", path)
        footer = data[f_off:f_off + f_len]
        if xxh3(footer) != f_sum:                                                       # 9
            raise Corrupt("footer checksum mismatch", path)
        self._parse_footer(footer, version, f_off)                                      # 10
        if entry is not None and (entry["count"], entry.get("min_key"), entry.get("max_key")) \
                != (self.count, self.meta["min_key"], self.meta["max_key"]):            # 11
            raise Corrupt("footer count or key range differs from the manifest", path)
        self.blocks: dict[int, tuple[list[bytes], list[bytes]]] = {}

    def _parse_footer(self, footer: bytes, version: int, f_off: int) -> None:
        path = self.path
        try:
            (meta_len,) = struct.unpack_from("<Q", footer, 0)
            meta = json.loads(footer[8:8 + meta_len].decode("utf-8"))
            nb, fk_bytes, index = meta["blocks"], meta["first_key_bytes"], meta["index"]
            npages = index["pages"]
        except (ValueError, KeyError, TypeError, struct.error):
            raise Corrupt("footer cannot be parsed", path) from None
        if not all(is_int(x) and x >= 0 for x in (nb, fk_bytes, npages)):
            raise Corrupt("bad block, page or first-key counts", path)
        pos = 8 + pad8(meta_len)
        if len(footer) != pos + 8 * (6 * nb + 2 + npages) + pad8(fk_bytes):
            raise Corrupt("footer length does not match its fields", path)

        def array(n: int) -> list[int]:
            nonlocal pos
            values = list(struct.unpack_from(f"<{n}Q", footer, pos))
            pos += 8 * n
            return values

        self.offset, self.stored, self.raw, self.sums = array(nb), array(nb), array(nb), array(nb)
        self.first_row, fk_off, self.page_sums = array(nb + 1), array(nb + 1), array(npages)
        fk = footer[pos:pos + fk_bytes]
        self.first_keys = [fk[fk_off[b]:fk_off[b + 1]] for b in range(nb)]
        # §3.5 rules
        if meta.get("format_version") != version:
            raise Corrupt("footer format_version differs from the header", path)
        if meta.get("codec") not in ("none", "zstd", "lz4"):
            raise Unsupported(f"codec {meta.get('codec')!r}", path)
        if index.get("hash") != "xxh3_64":
            raise Unsupported(f"index hash {index.get('hash')!r}", path)
        count = meta.get("count")
        if not is_int(count) or count < 0:
            raise Corrupt("bad count", path)
        if count == 0:
            if nb != 0 or meta.get("min_key") is not None or meta.get("max_key") is not None:
                raise Corrupt("an empty partition with blocks or keys", path)
        else:
            if nb == 0:
                raise Corrupt("rows but no blocks", path)
            self.min_key = unhex(meta.get("min_key"), path)
            self.max_key = unhex(meta.get("max_key"), path)
            if self.first_keys[0] != self.min_key:
                raise Corrupt("first key of block 0 is not min_key", path)
        if self.first_row[0] != 0 or self.first_row[-1] != count \
                or any(a >= b for a, b in zip(self.first_row, self.first_row[1:], strict=False)):
            raise Corrupt("bad block_first_row", path)
        if fk_off[0] != 0 or fk_off[-1] != fk_bytes \
                or any(a > b for a, b in zip(fk_off, fk_off[1:], strict=False)):
            raise Corrupt("bad first_key_offsets", path)
        home, total, offset = index.get("home_slots"), index.get("total_slots"), index.get("offset")
        if not (is_int(home) and is_int(total) and is_int(offset)) or npages < 1 \
                or total != 256 * npages or not 1 <= home < total:
            raise Corrupt("bad index slot counts", path)
        if offset % 4096 or offset + 4096 * npages != f_off:
            raise Corrupt("bad index position", path)
        self.meta, self.count, self.codec = meta, count, meta["codec"]
        self.home_slots, self.total_slots, self.index_offset = home, total, offset

    # ---- §3.3 / §3.4 blocks ----------------------------------------------------------------
    def block(self, b: int) -> tuple[list[bytes], list[bytes]]:
        if b in self.blocks:
            return self.blocks[b]
        off, stored_len, raw_len = self.offset[b], self.stored[b], self.raw[b]
        if off % 8 or off < 16 or off + stored_len > self.index_offset:
            raise Corrupt(f"block {b} lies outside the data region", self.path)
        stored = self.data[off:off + stored_len]
        if xxh3(stored) != self.sums[b]:
            raise Corrupt(f"block {b} checksum mismatch", self.path)
        if self.codec == "none":
            raw = stored
        else:
            try:
                raw = pa.CompressedInputStream(pa.BufferReader(stored), self.codec).read()
            except (OSError, pa.ArrowException):
                raise Corrupt(f"block {b} does not decompress", self.path) from None
        if len(raw) != raw_len:
            raise Corrupt(f"block {b} decompresses to {len(raw)} bytes, not {raw_len}", self.path)
        n = self.first_row[b + 1] - self.first_row[b]
        keys, k_end = self._column(raw, 0, n, b)
        values, v_end = self._column(raw, k_end, n, b)
        if v_end != raw_len:
            raise Corrupt(f"block {b} regions do not add up to its raw length", self.path)
        self.blocks[b] = (keys, values)
        return keys, values

    def _column(self, raw: bytes, start: int, n: int, b: int) -> tuple[list[bytes], int]:
        """One ``(n+1) x i64`` offsets array at ``start`` and its data; returns the items and
        where the next region starts."""
        if start + 8 * (n + 1) > len(raw):
            raise Corrupt(f"block {b} is too short", self.path)
        offs = struct.unpack_from(f"<{n + 1}q", raw, start)
        data_start = start + 8 * (n + 1)
        if offs[0] != 0 or any(x > y for x, y in zip(offs, offs[1:], strict=False)) \
                or data_start + offs[-1] > len(raw):
            raise Corrupt(f"block {b} offsets are inconsistent", self.path)
        items = [raw[data_start + offs[i]:data_start + offs[i + 1]] for i in range(n)]
        return items, data_start + pad8(offs[-1])

    def rows(self):
        """(key, value) of every row in file order."""
        for b in range(len(self.offset)):
            yield from zip(*self.block(b), strict=True)

    # ---- §3.6 hash index -------------------------------------------------------------------
    def slot(self, s: int) -> tuple[int, int]:
        page = s // 256
        start = self.index_offset + 4096 * page
        if xxh3(self.data[start:start + 4096]) != self.page_sums[page]:
            raise Corrupt(f"index page {page} checksum mismatch", self.path)
        return struct.unpack_from("<QQ", self.data, self.index_offset + 16 * s)

    def lookup(self, key: bytes):
        """The value of ``key``, or None."""
        h = xxh3(key) or 1
        home = s = h % self.home_slots
        while True:
            if s == self.total_slots:
                raise Corrupt("hash index probe ran off the end", self.path)
            sh, row = self.slot(s)
            if sh == 0:
                return None
            if sh == h:
                if row >= self.count:
                    raise Corrupt("index row out of range", self.path)
                b = bisect_right(self.first_row, row) - 1
                keys, values = self.block(b)
                if keys[row - self.first_row[b]] == key:
                    return values[row - self.first_row[b]]
            elif sh % self.home_slots > home:
                return None
            s += 1

    # ---- §4 verification -------------------------------------------------------------------
    def verify(self) -> None:
        pos = 16
        for b in range(len(self.offset)):
            if self.offset[b] != pos:
                raise Corrupt(f"block {b} is not where the layout puts it", self.path)
            end = self.offset[b] + self.stored[b]
            pos = pad8(end)
            if any(self.data[end:pos]):
                raise Corrupt(f"padding after block {b} is not zero", self.path)
        if self.index_offset != align4096(pos) or any(self.data[pos:self.index_offset]):
            raise Corrupt("index position or the padding before it is wrong", self.path)
        for s in range(0, self.total_slots, 256):
            self.slot(s)
        previous = None
        for b in range(len(self.offset)):
            keys, values = self.block(b)
            if self.tombstones and any(values):
                raise Corrupt(f"block {b} of a tombstone file holds a value", self.path)
            if keys[0] != self.first_keys[b]:
                raise Corrupt(f"block {b} first key differs from first_keys", self.path)
            for k in keys:
                if previous is not None and not previous < k:
                    raise Corrupt("keys are not strictly increasing", self.path)
                previous = k
        if self.count and previous != self.max_key:
            raise Corrupt("max_key differs from the last key", self.path)


# ---- the store -------------------------------------------------------------------------------
class SpecStore:
    """The current version of the store at ``root`` (a local directory)."""

    def __init__(self, root: str):
        self.root = root
        self.seq, self.record = current_record(root)
        check_marker(root)
        self.version = self.record["version"]
        self.manifest = read_manifest(root, self.version)
        vdir = os.path.join(root, "_versions", self.version)
        self.entries = self.manifest["partitions"]
        self.parts: list[Partition | None] = [
            Partition(os.path.join(vdir, *e["path"].split("/")), e) if e["count"] else None
            for e in self.entries]
        # §2.3: disjoint partitions sorted by min_key for the binary search
        self.by_min = sorted((e["lo"], i) for i, e in enumerate(self.entries) if e["count"])

    def get(self, key: bytes):
        if self.manifest["disjoint"]:
            j = bisect_right([lo for lo, _ in self.by_min], key) - 1
            if j < 0:
                return None
            i = self.by_min[j][1]
            return self.parts[i].lookup(key) if key <= self.entries[i]["hi"] else None
        for i in reversed(range(len(self.entries))):
            e = self.entries[i]
            if e["count"] and e["lo"] <= key <= e["hi"]:
                value = self.parts[i].lookup(key)
                if value is not None:
                    return None if self.parts[i].tombstones else value  # §3.8: stop here
        return None

    def pairs(self) -> list[tuple[bytes, bytes]]:
        if self.manifest["disjoint"]:
            return [kv for _, i in self.by_min for kv in self.parts[i].rows()]
        def stream(i: int):  # (a function: a nested generator would see only the last i)
            for k, v in self.parts[i].rows():
                yield k, -i, v

        streams = [stream(i) for i in range(len(self.entries)) if self.parts[i] is not None]
        out: list[tuple[bytes, bytes]] = []
        previous = None
        for k, minus_i, v in heapq.merge(*streams):
            if k != previous:  # the highest-priority row of k; a tombstone drops the key
                previous = k
                if not self.parts[-minus_i].tombstones:  # type: ignore[union-attr]
                    out.append((k, v))
        return out

    def verify(self) -> None:
        for part in self.parts:
            if part is not None:
                part.verify()


def frame_options(stored: bytes, codec: str) -> dict:
    """What the frame header of a compressed block says (§3.4), from the frame formats'
    own specifications (RFC 8878 §3.1.1.1; the LZ4 frame format's FLG and BD bytes)."""
    if codec == "zstd":
        if stored[:4] != b"\x28\xb5\x2f\xfd":
            raise Corrupt("not a zstd frame")
        fhd = stored[4]
        return {"content_size": bool(fhd >> 6) or bool(fhd & 0x20), "checksum": bool(fhd & 0x04),
                "dictionary": bool(fhd & 0x03)}
    if stored[:4] != b"\x04\x22\x4d\x18":
        raise Corrupt("not an LZ4 frame")
    flg, bd = stored[4], stored[5]
    return {"version": flg >> 6, "independent": bool(flg & 0x20),
            "block_checksum": bool(flg & 0x10), "content_size": bool(flg & 0x08),
            "checksum": bool(flg & 0x04),
            "dictionary": bool(flg & 0x01), "block_max": {4: 64 << 10, 5: 256 << 10,
                                                          6: 1 << 20, 7: 4 << 20}[(bd >> 4) & 7]}
