"""Counts the HTTP requests and body bytes an s3fs filesystem sends and receives.

botocore's event hooks on the filesystem's own client see every request it sends, retries
included (``before-send``), and every parsed response (``after-call``, whose ``Content-Length``
is the body that crossed the network). Used by the remote-lookup tests and the benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class S3Requests:
    """Running totals of one s3fs filesystem's traffic (register with :meth:`attach`).

    Attributes:
        requests: HTTP requests sent.
        bytes: body bytes of GetObject answers received.
        gets: GetObject requests answered.
    """

    requests: int = 0
    bytes: int = 0
    gets: int = 0

    def attach(self, fs: Any) -> S3Requests:
        """Start counting the requests of ``fs`` (an s3fs ``S3FileSystem``).

        Args:
            fs: the filesystem; its client is created if it was not yet.

        Returns:
            self.
        """
        if getattr(fs, "_s3", None) is None:
            fs.connect()
        events = fs.s3.meta.events
        events.register("before-send.s3", self._sent)
        events.register("after-call.s3", self._answered)
        return self

    def _sent(self, **_: Any) -> None:
        self.requests += 1

    def _answered(self, http_response: Any = None, model: Any = None, **_: Any) -> None:
        if model is not None and model.name == "GetObject" and http_response is not None:
            self.gets += 1
            self.bytes += int(http_response.headers.get("content-length") or 0)

    def snapshot(self) -> tuple[int, int]:
        """(requests, bytes) so far."""
        return self.requests, self.bytes
