"""A lean keep-alive HTTP/1.1 connection for small request/answer exchanges (kvio.connect's
gets and batch gets).

``http.client`` costs a lookup client more than the server does: it parses every answer's
headers with the email package, sends a body of 2,000 bytes or more in a second ``send`` after
the head (which Nagle's algorithm then holds until the server acknowledges the head), and
wraps the body in a file object. Here a request is one ``sendall`` of head and body on a
socket with Nagle off, and the answer is read with a few ``recv`` calls: the head split on
CRLF, the body by ``Content-Length``, chunked, or up to the end of the connection.

Streamed answers (scans) still use ``http.client``.
"""
from __future__ import annotations

import socket
import ssl

#: the longest answer head accepted
MAX_HEAD = 64 << 10
_RECV = 256 << 10


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as expected."""


class StaleConnection(Exception):
    """A reused keep-alive connection turned out closed by the server before any byte of the
    answer arrived: the request may be sent again on a new connection."""


class Connection:
    """One keep-alive connection to ``host:port``, opened on first use and after a close.

    Args:
        host: the server's host name or address.
        port: its port (None: 80, or 443 with ``https``).
        https: TLS with the default context (certificates verified).
        timeout: seconds for connecting and for each wait on the socket.
    """

    def __init__(self, host: str, port: int | None, https: bool, timeout: float):
        self.host, self.https, self.timeout = host, https, timeout
        self.port = port if port is not None else (443 if https else 80)
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if port is None else f"{shown}:{port}"
        self.sock: socket.socket | None = None
        self._buf = b""

    def close(self) -> None:
        sock, self.sock, self._buf = self.sock, None, b""
        if sock is not None:
            sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        return sock

    def request(self, method: str, target: str, headers: dict[str, str],
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its whole answer.

        Args:
            method: e.g. ``"GET"``.
            target: the request target (path and query), ASCII.
            headers: extra request headers.
            body: the body, if any (sent with its Content-Length).

        Returns:
            (status, headers with lower-case names, body).

        Raises:
            StaleConnection: the connection was reused and the server had closed it.
            OSError: the connection failed (refused, reset, timed out).
            ProtocolError: the answer is not HTTP/1.1.
        """
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}",
                 "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if body:
            data += body
        sock = self.sock
        reused = sock is not None
        if sock is None:
            sock = self._connect()
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            if reused:
                raise StaleConnection(str(exc)) from exc
            raise
        try:
            status, answer_headers, keep = self._read_head(sock, reused)
            content = self._read_body(sock, method, status, answer_headers)
        except BaseException:
            self.close()  # the connection's state is unknown: never reuse it
            raise
        if not keep or answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, content

    def _recv(self, sock: socket.socket) -> bytes:
        chunk = sock.recv(_RECV)
        if not chunk:
            raise ProtocolError("the server closed the connection in the middle of an answer")
        return chunk

    def _read_head(self, sock: socket.socket, reused: bool) -> tuple[int, dict[str, str], bool]:
        while True:  # (interim 1xx answers are skipped)
            buf = self._buf
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("the answer's head is too long")
                try:
                    chunk = sock.recv(_RECV)
                except ConnectionResetError as exc:
                    if reused and not buf:
                        raise StaleConnection(str(exc)) from exc
                    raise
                if not chunk:
                    if reused and not buf:
                        raise StaleConnection("the server had closed the connection")
                    raise ProtocolError("the server closed the connection without an answer")
                buf += chunk
            head, self._buf = buf[:end], buf[end + 4:]
            lines = head.split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            code = rest[:3]
            if not version.startswith(b"HTTP/1.") or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
            status = int(code)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise ProtocolError(f"bad header line in the answer: {line[:80]!r}")
                key = name.strip().lower().decode("latin-1")
                text = value.strip().decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            if 100 <= status < 200 and status != 101:
                continue
            return status, headers, version != b"HTTP/1.0"

    def _read_body(self, sock: socket.socket, method: str, status: int,
                   headers: dict[str, str]) -> bytes:
        if method == "HEAD" or status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(sock)
        length = headers.get("content-length")
        if length is None:  # delimited by the end of the connection
            parts = [self._buf]
            self._buf = b""
            while chunk := sock.recv(_RECV):
                parts.append(chunk)
            self.close()
            return b"".join(parts)
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length {length!r}")
        return self._read_exact(sock, int(length))

    def _read_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = self._buf
        if len(buf) >= n:
            self._buf = buf[n:]
            return buf[:n]
        parts, got = [buf], len(buf)
        while got < n:
            chunk = self._recv(sock)
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
        self._buf = data[n:]
        return data[:n]

    def _read_line(self, sock: socket.socket) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("a chunk size line is too long")
            self._buf += self._recv(sock)
        line, self._buf = self._buf[:end], self._buf[end + 2:]
        return line

    def _read_chunked(self, sock: socket.socket) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._read_line(sock).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line(sock):  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._read_exact(sock, size))
            if self._read_exact(sock, 2) != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")
