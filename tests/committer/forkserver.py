"""A fork server for the fault-injection children: one process imports kvio and the scenario
module once, then forks a fresh child for every run.

Every kill point used to start a new interpreter, and importing kvio (numpy, pyarrow, fsspec)
costs about a second: with some 500 kill points per suite that was most of CI's time. A forked
child starts with the modules already imported and nothing else: the server itself never runs a
scenario, opens a store or starts a thread, so each child begins from the same clean state as a
new interpreter would, and is still a real process that the scenario kills with SIGKILL.

Protocol (one JSON object per line): the client writes ``{"argv": [...], "env": {...},
"timeout": seconds}``; the server forks, the child sets ``sys.argv`` and ``os.environ`` and runs
the module's ``main()`` with stdout and stderr going to temporary files, and the server answers
``{"returncode": ..., "stdout": ..., "stderr": ...}`` (a negative return code is the signal that
ended the child, as in :mod:`subprocess`).

    python tests/committer/forkserver.py MODULE      (MODULE: faultlib or txnfaultlib)
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _run_forked(module: Any, request: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: run the scenario, never return into the server's loop
            code = 0
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                os.environ.clear()
                os.environ.update(request["env"])
                sys.argv = list(request["argv"])
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                module.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - report it like an interpreter would
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        deadline = time.monotonic() + float(request.get("timeout", 180))
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"returncode": None, "stdout": "", "stderr": "timed out"}
            time.sleep(0.002)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.seek(0)
        err.seek(0)
        return {"returncode": returncode, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


def serve(module_name: str) -> None:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(module_name)
    replies = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        reply = _run_forked(module, json.loads(line))
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class ForkServer:
    """The client side: start the server once, then run children through it.

    Args:
        module: the scenario module (``faultlib`` or ``txnfaultlib``) whose ``main()`` runs.
    """

    def __init__(self, module: str):
        self.module = module
        self._idle: list[subprocess.Popen] = []  # one server per concurrent caller
        self._all: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return subprocess.Popen([sys.executable, str(HERE / "forkserver.py"), self.module],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env, cwd=ROOT)

    def run(self, spec: dict, timeout: float) -> subprocess.CompletedProcess:
        """Run the module's ``main()`` with ``spec`` as its argument in a forked child.

        Args:
            spec: the scenario spec (JSON-able).
            timeout: seconds before the child is killed.

        Returns:
            What subprocess.run would return for ``python MODULE.py SPEC``.

        Raises:
            subprocess.TimeoutExpired: the child ran longer than ``timeout``.
        """
        argv = [str(HERE / f"{self.module}.py"), json.dumps(spec)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with self._lock:
            proc = self._idle.pop() if self._idle else None
            if proc is None or proc.poll() is not None:
                proc = self._start()
                self._all.append(proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"argv": argv, "env": env, "timeout": timeout}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        with self._lock:
            self._idle.append(proc)
        if not line:
            raise RuntimeError(f"the fork server of {self.module} died")
        reply = json.loads(line)
        if reply["returncode"] is None:
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, reply["returncode"], reply["stdout"],
                                           reply["stderr"])

    def close(self) -> None:
        """Stop the servers (each exits when its input closes)."""
        with self._lock:
            procs, self._all, self._idle = self._all, [], []
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()


if __name__ == "__main__":
    serve(sys.argv[1])
