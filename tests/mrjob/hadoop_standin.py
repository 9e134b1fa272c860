"""A stand-in ``hadoop`` executable for testing ``-r hadoop`` without a cluster.

It is a real program (tests install a two-line ``hadoop`` shell wrapper that runs this file)
that understands what mrjob 0.7.4's hadoop runner calls:

* ``hadoop version`` and ``hadoop fs -ls/-mkdir/-put/-cat/-rm/-copyToLocal/-du/-touchz`` on
  ``hdfs://`` URIs, mapped into the directory ``$KVIO_STANDIN_HDFS``;
* ``hadoop jar STREAMING_JAR ...``: runs the streaming job with Hadoop's contract, not the
  local runner's: every map task's output is hash-partitioned over
  ``mapreduce.job.reduces`` reducers (``KeyFieldBasedPartitioner`` on the ``-k`` fields, else
  the whole key), each reducer's input is sorted by its key (the first
  ``stream.num.map.output.key.fields`` tab-separated fields), and reducers run in reverse
  order, so nothing can rely on an order across reducers. Task counters are summed and
  printed the way ``hadoop jar`` logs them.

Every ``jar`` command line is appended as JSON to ``$KVIO_STANDIN_LOG`` for inspection.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

VERSION = "3.3.6"


def _now() -> str:
    return time.strftime("%y/%m/%d %H:%M:%S")


def log4j(level: str, logger: str, message: str) -> None:
    sys.stderr.write(f"{_now()} {level} {logger}: {message}\n")
    sys.stderr.flush()


def local(uri: str) -> str:
    """The directory standing in for HDFS holds every hdfs:// path."""
    root = os.environ["KVIO_STANDIN_HDFS"]
    parsed = urlparse(uri)
    if parsed.scheme not in ("hdfs", ""):
        raise SystemExit(f"stand-in hadoop: unsupported URI {uri}")
    return os.path.join(root, parsed.path.lstrip("/"))


def to_uri(path: str) -> str:
    root = os.environ["KVIO_STANDIN_HDFS"]
    return "hdfs:///" + os.path.relpath(path, root)


# ---- hadoop fs -------------------------------------------------------------------------------
def _ls_line(path: str) -> str:
    st = os.stat(path)
    kind = "d" if os.path.isdir(path) else "-"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
    rel = os.path.relpath(path, os.environ["KVIO_STANDIN_HDFS"])
    return f"{kind}rw-r--r--   1 kvio supergroup {st.st_size:10d} {stamp} /{rel}"


def fs(args: list[str]) -> int:
    cmd, rest = args[0], [a for a in args[1:] if a not in ("-p", "-R", "-f", "-skipTrash")]
    if cmd in ("-ls", "-lsr"):
        target = local(rest[0])
        if not os.path.exists(target):
            sys.stderr.write(f"ls: `{rest[0]}': No such file or directory\n")
            return 1
        if os.path.isfile(target):
            print(_ls_line(target))
            return 0
        for folder, dirs, files in os.walk(target):
            for name in sorted(dirs) + sorted(files):
                print(_ls_line(os.path.join(folder, name)))
        return 0
    if cmd == "-mkdir":
        os.makedirs(local(rest[0]), exist_ok=True)
        return 0
    if cmd == "-put":
        dest = local(rest[1])
        if os.path.exists(dest):
            sys.stderr.write(f"put: `{rest[1]}': File exists\n")
            return 1
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(rest[0], dest)
        return 0
    if cmd in ("-cat", "-text"):
        with open(local(rest[0]), "rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer)
        return 0
    if cmd in ("-copyToLocal", "-get"):
        shutil.copyfile(local(rest[0]), rest[1])
        return 0
    if cmd in ("-rm", "-rmr"):
        target = local(rest[0])
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
        return 0
    if cmd == "-du":
        target = local(rest[0])
        if not os.path.exists(target):
            return 1
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs_ in os.walk(target) for f in fs_) \
            if os.path.isdir(target) else os.path.getsize(target)
        print(f"{total}  {rest[0]}")
        return 0
    if cmd == "-touchz":
        open(local(rest[0]), "ab").close()
        return 0
    sys.stderr.write(f"stand-in hadoop: fs {cmd} is not implemented\n")
    return 2


# ---- hadoop jar (streaming) ------------------------------------------------------------------
def java_hash(data: bytes) -> int:
    """Hadoop's byte hash (31 * h + signed byte), as an unsigned partition number source."""
    h = 0
    for b in data:
        h = (31 * h + (b - 256 if b > 127 else b)) & 0xFFFFFFFF
    return h & 0x7FFFFFFF


def parse_streaming_args(args: list[str]) -> dict:
    opts: dict = {"D": {}, "cmdenv": {}, "input": [], "files": []}
    i = 0
    while i < len(args):
        flag = args[i].lstrip("-")
        value = args[i + 1] if i + 1 < len(args) else None
        i += 2
        if flag == "D":
            key, _, val = value.partition("=")
            opts["D"][key] = val
        elif flag == "cmdenv":
            key, _, val = value.partition("=")
            opts["cmdenv"][key] = val
        elif flag == "input":
            opts["input"].append(value)
        elif flag == "files":
            opts["files"].extend(value.split(","))
        else:
            opts[flag] = value
    return opts


class Counters:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, int]] = {}

    def parse(self, stderr: bytes) -> None:
        for line in stderr.decode("utf-8", "replace").splitlines():
            if line.startswith("reporter:counter:"):
                group, name, amount = line[len("reporter:counter:"):].rsplit(",", 2)
                self.values.setdefault(group, {}).setdefault(name, 0)
                self.values[group][name] += int(amount)

    def log(self) -> None:
        lines = [f"Counters: {sum(len(v) for v in self.values.values())}"]
        for group in sorted(self.values):
            lines.append(f"\t{group}")
            lines.extend(f"\t\t{name}={amount}" for name, amount in sorted(self.values[group].items()))
        log4j("INFO", "mapreduce.Job", "\n".join(lines))


def run_task(kind: str, number: int, command: str, stdin: bytes, opts: dict, scratch: str,
             counters: Counters) -> bytes:
    wd = os.path.join(scratch, f"{kind}-{number:05d}")
    os.makedirs(wd)
    for item in opts["files"]:
        uri, _, name = item.partition("#")
        name = name or os.path.basename(urlparse(uri).path)
        os.symlink(local(uri), os.path.join(wd, name))
    env = dict(os.environ)
    for key, value in opts["D"].items():
        env[key.replace(".", "_")] = value
    letter = "m" if kind == "map" else "r"
    env.update({
        "mapreduce_job_id": "job_standin_0001",
        "mapreduce_task_id": f"task_standin_0001_{letter}_{number:06d}",
        "mapreduce_task_attempt_id": f"attempt_standin_0001_{letter}_{number:06d}_0",
        "mapreduce_task_partition": str(number),
        "mapreduce_task_ismap": "true" if kind == "map" else "false",
        "mapreduce_job_local_dir": wd,
    })
    env.update(opts["cmdenv"])
    proc = subprocess.run(shlex.split(command), input=stdin, cwd=wd, env=env, capture_output=True)
    counters.parse(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        log4j("INFO", "mapreduce.Job", f"Task Id : attempt_standin_0001_{letter}_{number:06d}_0, "
                                       "Status : FAILED")
        log4j("ERROR", "streaming.StreamJob", "Job not successful!")
        sys.stderr.write("Streaming Command Failed!\n")
        raise SystemExit(1)
    return proc.stdout


def split_key(line: bytes, fields: int) -> tuple[bytes, bytes]:
    parts = line.split(b"\t", fields)
    if len(parts) <= fields:
        return line, b""
    return b"\t".join(parts[:fields]), parts[fields]


def streaming(args: list[str]) -> int:
    opts = parse_streaming_args(args)
    with open(os.environ["KVIO_STANDIN_LOG"], "a") as handle:
        handle.write(json.dumps(["jar"] + args) + "\n")
    output = local(opts["output"])
    if os.path.exists(output):
        log4j("ERROR", "streaming.StreamJob",
              f"Error Launching job : Output directory {opts['output']} already exists")
        return 1
    nline = "NLineInputFormat" in opts.get("inputformat", "")
    inputs: list[bytes] = []
    for uri in opts["input"]:
        path = local(uri)
        files = [os.path.join(d, f) for d, _, fs_ in os.walk(path) for f in sorted(fs_)
                 if not f.startswith(("_", "."))] if os.path.isdir(path) else [path]
        for name in files:
            with open(name, "rb") as handle:
                data = handle.read()
            if nline:  # one map task per line, fed as "offset TAB line" like NLineInputFormat
                offset = 0
                for line in data.splitlines(keepends=True):
                    inputs.append(b"%d\t%s" % (offset, line))
                    offset += len(line)
            else:
                inputs.append(data)
    scratch = tempfile.mkdtemp(prefix="standin-hadoop-")
    counters = Counters()
    reducers = int(opts["D"].get("mapreduce.job.reduces", "1"))
    key_fields = int(opts["D"].get("stream.num.map.output.key.fields", "1"))
    part_fields = None
    if "KeyFieldBasedPartitioner" in opts.get("partitioner", ""):
        spec = opts["D"].get("mapreduce.partition.keypartitioner.options", "-k1")
        first, _, last = spec.replace("-k", "").partition(",")
        part_fields = (int(first), int(last or first))
    try:
        shuffled: list[list[tuple[bytes, bytes]]] = [[] for _ in range(max(reducers, 1))]
        map_outputs = []
        for number, data in enumerate(inputs):
            out = run_task("map", number, opts["mapper"], data, opts, scratch, counters)
            if opts.get("combiner"):
                lines = sorted(out.splitlines(keepends=True),
                               key=lambda line: split_key(line.rstrip(b"\n"), key_fields)[0])
                out = run_task("combine", number, opts["combiner"], b"".join(lines), opts, scratch, counters)
            map_outputs.append(out)
        os.makedirs(output)
        if reducers == 0:  # map-only job: map outputs are the part files
            for number, out in enumerate(map_outputs):
                with open(os.path.join(output, f"part-{number:05d}"), "wb") as handle:
                    handle.write(out)
        else:
            for out in map_outputs:
                for line in out.splitlines():
                    key, value = split_key(line, key_fields)
                    if part_fields:
                        fields = key.split(b"\t")
                        hashed = b"\t".join(fields[part_fields[0] - 1:part_fields[1]])
                    else:
                        hashed = key
                    shuffled[java_hash(hashed) % reducers].append((key, value))
            for number in reversed(range(reducers)):
                records = sorted(shuffled[number], key=lambda kv: kv[0])
                data = b"".join(k + b"\t" + v + b"\n" for k, v in records)
                out = run_task("reduce", number, opts["reducer"], data, opts, scratch, counters)
                with open(os.path.join(output, f"part-{number:05d}"), "wb") as handle:
                    handle.write(out)
        open(os.path.join(output, "_SUCCESS"), "wb").close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log4j("INFO", "mapreduce.Job", "Job job_standin_0001 completed successfully")
    counters.log()
    log4j("INFO", "streaming.StreamJob", f"Output directory: {opts['output']}")
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("usage: hadoop version | fs ... | jar JAR ...\n")
        return 2
    if argv[0] == "version":
        print(f"Hadoop {VERSION}")
        print("stand-in for kvio tests (tests/mrjob/hadoop_standin.py)")
        return 0
    if argv[0] == "fs":
        return fs(argv[1:])
    if argv[0] == "jar":
        return streaming(argv[2:])
    sys.stderr.write(f"stand-in hadoop: {argv[0]} is not implemented\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
