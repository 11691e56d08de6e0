"""HTTP/1.1 chunked transfer coding undone on raw bytes, for the clients that read below their
HTTP library (the requests client under urllib3, the httpx one under h11): a burst of
one-chunk events comes out as one piece, decoded in one pass. Sans-IO; errors are
``http.client``'s (``IncompleteRead``, ``LineTooLong``), which each client maps to its own.
"""

from __future__ import annotations

import http.client
from itertools import repeat

__all__ = ["Dechunker"]


class Dechunker:
    """HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1), undone on whatever bytes have arrived.

    Many small chunks (a server flushing event by event) come out as one piece, so the
    decoder runs once per network read instead of once per event.
    """

    def __init__(self) -> None:
        self._head = b""  # an unfinished chunk-size line
        self._left = 0  # bytes of chunk data still to come
        self._crlf = 0  # bytes of the CRLF after the data still to skip
        self.done = False  # the last chunk (size 0) was seen

    def feed(self, data: bytes) -> bytes:
        """The chunk data in ``data``; ``http.client.HTTPException`` for bad framing."""
        out: list[bytes] = []
        self._feed(data, out)
        return b"".join(out)

    def take(self, data: bytes) -> tuple[bytes, http.client.HTTPException | None]:
        """The chunk data in ``data`` up to bad framing, if any, and the error: the events
        that came whole before it are still delivered (as h11 hands chunks over one by one)."""
        out: list[bytes] = []
        try:
            self._feed(data, out)
        except http.client.HTTPException as exc:
            return b"".join(out), exc
        return b"".join(out), None

    def _feed(self, data: bytes, out: list[bytes]) -> None:
        if self._head:
            data = self._head + data
            self._head = b""
        pos, end = 0, len(data)
        while pos < end and (self._left or self._crlf):
            pos = self._rest_of_chunk(data, pos, out)
        if pos < end and not self.done:
            pos = self._whole_chunks(data, pos, out)
        while pos < end and not self.done:
            if self._left or self._crlf:
                pos = self._rest_of_chunk(data, pos, out)
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                if end - pos > 4096:
                    raise http.client.LineTooLong("chunk size line")
                self._head = data[pos:]
                break
            try:
                size = int(data[pos:nl], 16)  # int() strips the CR
            except ValueError:
                size = self._size_with_extension(data[pos:nl])
            if size <= 0:
                if size < 0:
                    raise http.client.IncompleteRead(b"", None)
                self.done = True  # trailers, if any, are not needed
                break
            start = nl + 1
            stop = start + size
            if stop + 2 <= end and data[stop : stop + 2] == b"\r\n":
                # The usual case: the whole chunk is here.
                out.append(data[start:stop])
                pos = stop + 2
            else:
                self._left = size
                pos = start

    @staticmethod
    def _whole_chunks(data: bytes, pos: int, out: list[bytes]) -> int:
        """Take the run of whole plain chunks (``size CRLF data CRLF``, no extension, no CR LF in
        the data) that starts at ``pos``, a chunk's start, without a Python step per chunk; the
        new position. When in doubt (an extension, a CR LF in the data, the last chunk) it takes
        nothing and leaves the bytes to the general loop.
        """
        parts = (data[pos:] if pos else data).split(b"\r\n")
        pairs = (len(parts) - 1) // 2  # (size line, data) pairs, each followed by CR LF
        if not pairs:
            return pos
        sizes, bodies = parts[0 : 2 * pairs : 2], parts[1 : 2 * pairs : 2]
        try:
            lengths = list(map(int, sizes, repeat(16)))
        except ValueError:
            return pos
        # Where a chunk's data holds a CR LF, the split goes astray there and that chunk's
        # length cannot match: a match of every pair is the true framing.
        if lengths != list(map(len, bodies)) or 0 in lengths:
            return pos
        out.extend(bodies)
        return pos + sum(lengths) + sum(map(len, sizes)) + 4 * pairs

    def _rest_of_chunk(self, data: bytes, pos: int, out: list[bytes]) -> int:
        """Take chunk data, then its CRLF, from a chunk split across reads; the new position."""
        if self._left:
            take = min(self._left, len(data) - pos)
            out.append(data[pos : pos + take])
            self._left -= take
            if not self._left:
                self._crlf = 2
            return pos + take
        if data[pos] != b"\r\n"[2 - self._crlf]:
            raise http.client.IncompleteRead(b"", None)
        self._crlf -= 1
        return pos + 1

    @staticmethod
    def _size_with_extension(line: bytes) -> int:
        try:
            return int(line.split(b";", 1)[0], 16)
        except ValueError:
            raise http.client.IncompleteRead(b"", None) from None
