"""A lean asyncio HTTP/1.1 client for the *timed* requests of bench-http.

Why not httpx here: on a small, busy box httpx's layered send/receive stack (httpx → httpcore → h11 → anyio)
added up to ~1.5 ms at p99 between the server's write and the client seeing the first audio bytes — more than
the error budget of a TTFA measurement (docs/benchmarks/client-overhead.json). This module does only what a
speech benchmark needs, on asyncio streams: POST with a body, response head, then the body as it arrives
(Content-Length, chunked, or until close), keep-alive connections reused per origin, one deadline per wait.

Everything that goes wrong becomes one of three exceptions, so the caller can tell the user what happened:
:class:`ConnectFailed` (no connection at all), :class:`TimedOut` (nothing arrived within the timeout) and
:class:`ConnectionBroke` (the peer closed/reset the connection or sent something that is not HTTP/1.1).
No proxies: a benchmark times the server, not a proxy in between (documented in bench-http's help).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_READ_SIZE = 65536
_MAX_HEAD = 65536
_USER_AGENT = "ttsbench-bench-http"


class HttpClientError(Exception):
    """Base of the errors below; the message is one line meant for the user."""


class ConnectFailed(HttpClientError):
    """No connection could be made (refused, unknown host, TLS handshake failed)."""


class TimedOut(HttpClientError):
    """Connecting, sending or the next piece of the response took longer than the timeout."""


class ConnectionBroke(HttpClientError):
    """The connection closed or reset mid-response, or the response is not valid HTTP/1.1."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def split_url(url: str) -> tuple[Origin, str]:
    """``http(s)://host[:port]/path?q`` → (origin, request target)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return Origin(u.scheme, u.hostname, port), target


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` body decoder (extensions and trailers ignored)."""

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0  # data bytes left in the current chunk
        self._state = "size"  # size | data | data-end | trailer | done

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def extra(self) -> bytes:
        """Bytes received after the end of the body (a server that sends them cannot be reused)."""
        return self._buf if self.done else b""

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while self._buf and not self.done:
            if self._state == "data":
                take = self._buf[: self._left]
                out += take
                self._buf = self._buf[len(take) :]
                self._left -= len(take)
                if self._left == 0:
                    self._state = "data-end"
                continue
            if self._state == "data-end":
                if len(self._buf) < 2:
                    break
                if self._buf[:2] != b"\r\n":
                    raise ConnectionBroke("bad chunked encoding: chunk data not followed by CRLF")
                self._buf = self._buf[2:]
                self._state = "size"
                continue
            line, sep, rest = self._buf.partition(b"\r\n")
            if not sep:
                if len(self._buf) > 1024:
                    raise ConnectionBroke("bad chunked encoding: chunk-size line too long")
                break
            self._buf = rest
            if self._state == "trailer":
                if not line:
                    self._state = "done"
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionBroke(f"bad chunked encoding: chunk size {line[:20]!r}") from None
            if size < 0:
                raise ConnectionBroke("bad chunked encoding: negative chunk size")
            self._left = size
            self._state = "trailer" if size == 0 else "data"
        return bytes(out)


@dataclass
class _Conn:
    origin: Origin
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    _client: Client
    _conn: _Conn | None
    _timeout_s: float
    _first: bytes = b""  # body bytes that came with the head
    _keep_alive: bool = True
    _consumed: bool = False

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded from chunked framing), piece by piece; each piece is non-empty."""
        conn = self._conn
        if conn is None or self._consumed:
            raise RuntimeError("response body already read")
        self._consumed = True
        te = self.headers.get("transfer-encoding", "").lower()
        chunked = "chunked" in te
        length: int | None = None
        if not chunked and "content-length" in self.headers:
            try:
                length = int(self.headers["content-length"])
            except ValueError:
                raise ConnectionBroke(f"bad Content-Length {self.headers['content-length']!r}") from None
        dec = ChunkedDecoder() if chunked else None
        got = 0
        data = self._first
        self._first = b""
        complete = False
        while True:
            if data:
                if dec is not None:
                    body = dec.feed(data)
                    if dec.extra:
                        self._keep_alive = False
                else:
                    body = data if length is None else data[: length - got]
                    if length is not None and len(data) > len(body):
                        self._keep_alive = False
                    got += len(body)
                if body:
                    yield body  # no timeout context is held across this yield
            # checked before every read: a ``Content-Length: 0`` body is complete before any byte arrives
            # (reading would wait for the next response on a kept-open connection, i.e. until the timeout)
            if (dec is not None and dec.done) or (length is not None and got >= length):
                complete = True
                break
            try:
                async with asyncio.timeout(self._timeout_s):
                    data = await conn.reader.read(_READ_SIZE)
            except TimeoutError:
                raise TimedOut(f"no data for {self._timeout_s:g} s") from None
            except OSError as exc:
                raise ConnectionBroke(_os_error(exc)) from None
            if not data:
                if dec is None and length is None:  # body delimited by the connection closing
                    self._keep_alive = False
                    complete = True
                    break
                what = "chunked body" if dec is not None else f"body ({got} of {length} bytes)"
                raise ConnectionBroke(f"server closed the connection before the end of the {what}")
        if complete:
            self._release(reuse=self._keep_alive)

    async def read(self, limit: int = 1 << 20) -> bytes:
        """The whole body (up to ``limit`` bytes; the rest is dropped and the connection closed)."""
        out = bytearray()
        async for piece in self.pieces():
            out += piece
            if len(out) >= limit:
                self._keep_alive = False
                break
        return bytes(out[:limit])

    def _release(self, reuse: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.give_back(conn, reuse)

    async def aclose(self) -> None:
        """Return the connection to the pool if the body was read to its end, otherwise close it."""
        self._release(reuse=False)


@dataclass
class Client:
    """Keep-alive connections per origin; no limit on open connections (callers bound concurrency)."""

    max_idle_per_origin: int = 32
    connect_timeout_s: float = 30.0
    _idle: dict[Origin, list[_Conn]] = field(default_factory=dict)
    _ssl: ssl.SSLContext | None = None
    _closed: bool = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()

    def give_back(self, conn: _Conn, reuse: bool) -> None:
        """Keep a connection whose response was read to its end for the next request, or close it."""
        idle = self._idle.setdefault(conn.origin, [])
        if reuse and not self._closed and conn.usable() and len(idle) < self.max_idle_per_origin:
            conn.reused = True
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, origin: Origin, timeout_s: float) -> _Conn:
        while self._idle.get(origin):
            conn = self._idle[origin].pop()
            if conn.usable():
                return conn
            conn.close()
        tls = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(min(timeout_s, self.connect_timeout_s)):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                    limit=_MAX_HEAD,
                )
        except TimeoutError:
            raise TimedOut(
                f"connecting to {origin.host}:{origin.port} took longer than "
                f"{min(timeout_s, self.connect_timeout_s):g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(_os_error(exc)) from None
        return _Conn(origin, reader, writer)

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Response:
        """Send one POST and read the response head; the body is read through :meth:`Response.pieces`.

        A kept-alive connection the server closed meanwhile is retried once on a fresh one (nothing of the
        response had arrived, so the server never answered it)."""
        return await self.request("POST", url, body, headers, timeout_s)

    async def request(self, method: str, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Response:
        """:meth:`post` with any method (GET, PUT, ...)."""
        origin, target = split_url(url)
        head = _request_head(method, target, origin, headers, len(body))
        for attempt in (0, 1):
            conn = await self._connect(origin, timeout_s)
            try:
                return await self._exchange(conn, head + body, timeout_s)
            except _StaleConnection:
                conn.close()
                if attempt == 1:
                    raise ConnectionBroke("server closed the connection without answering") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, conn: _Conn, request: bytes, timeout_s: float) -> Response:
        try:
            async with asyncio.timeout(timeout_s):
                conn.writer.write(request)
                await conn.writer.drain()
                while True:
                    try:
                        raw = await conn.reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError as exc:
                        if not exc.partial and conn.reused:
                            raise _StaleConnection from None
                        raise ConnectionBroke(
                            "server closed the connection " + ("mid-header" if exc.partial else "without answering")
                        ) from None
                    except asyncio.LimitOverrunError:
                        raise ConnectionBroke(f"response head larger than {_MAX_HEAD} bytes") from None
                    status, reason, headers, keep_alive = _parse_head(raw)
                    if status >= 200 or status == 101:
                        break  # 1xx informational heads are skipped
        except TimeoutError:
            raise TimedOut(f"no response head within {timeout_s:g} s") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            if conn.reused:
                raise _StaleConnection from None
            raise ConnectionBroke(_os_error(exc)) from None
        except OSError as exc:
            raise ConnectionBroke(_os_error(exc)) from None
        return Response(status, reason, headers, self, conn, timeout_s, _keep_alive=keep_alive)


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


def _request_head(method: str, target: str, origin: Origin, headers: dict[str, str], length: int) -> bytes:
    names = {k.lower() for k in headers}
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
    defaults = {"user-agent": _USER_AGENT, "accept": "*/*"}
    lines += [f"{k.title()}: {v}" for k, v in defaults.items() if k not in names]
    for k, v in headers.items():
        if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
            raise ValueError(f"header {k!r} contains a line break")
        if k.lower() not in ("content-length", "host", "transfer-encoding", "connection"):
            lines.append(f"{k}: {v}")
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(raw: bytes) -> tuple[int, str, dict[str, str], bool]:
    text = raw.decode("latin-1")
    status_line, *header_lines = text[:-4].split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectionBroke(f"not an HTTP/1.x response: {status_line[:60]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ConnectionBroke(f"bad response header line {line[:60]!r}")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    conn_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in conn_tokens and (parts[0] != "HTTP/1.0" or "keep-alive" in conn_tokens)
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, keep_alive


def _os_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text
