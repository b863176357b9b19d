"""nats-py's protocol parser, except that a large message body is gathered from the socket's reads and joined once.

nats-py's parser appends every read to one bytearray and, once a body is complete, copies it out
twice (a bytearray slice, then `bytes` of it): with an object's 1 MiB chunks arriving in 256 KiB
reads, three copies of every byte, ~0.4 ms of CPU per MiB here. This parser hands the base parser
everything but the rest of a large body without headers (an object chunk): it keeps the reads'
pieces as they come (views, no copy) and joins them once, ~0.2 ms per MiB (ops/bench/README.md,
"Distribution: writing around the page cache"). Messages, their order and the calls made for them
are the base parser's; a test feeds both the same streams cut at every size.
"""

from __future__ import annotations

from typing import Any

from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, CRLF_SIZE, Parser

GATHER_BYTES = 64 * 1024  # bodies at least this large are gathered; smaller ones the base parser copies cheaply


class GatheringParser(Parser):
    """A Parser that gathers the rest of a large headerless body from the reads instead of its buffer."""

    nc: Any  # the client whose _process_msg gets every message (nats-py leaves it untyped)

    def reset(self) -> None:
        """As the base parser's (a reconnect calls it), dropping a body being gathered."""
        super().reset()
        self._pieces: list[bytes | memoryview] | None = None  # the body so far, while one is gathered
        self._missing = 0  # bytes of the body still to come
        self._skip = 0  # bytes of its closing CRLF still to come
        self._body = b""

    async def parse(self, data: bytes | memoryview = b"") -> None:
        """Take one read from the socket and dispatch every message it completes."""
        if self._pieces is not None:
            data = self._gather(data)
            if self._pieces is not None:
                return  # the body goes on in the next read
            body, self._body = self._body, b""
            self.state = AWAITING_CONTROL_LINE
            args = self.msg_arg
            await self.nc._process_msg(args["sid"], args["subject"], args["reply"], body, None)  # noqa: SLF001
        await super().parse(data)  # type: ignore[arg-type]  # it only extends its bytearray with it
        if (self.state == AWAITING_MSG_PAYLOAD and not self.header_needed and self.needed >= GATHER_BYTES
                and len(self.buf) < self.needed):
            # The base parser would wait for the whole body in its buffer: take over from here.
            self._pieces = [bytes(self.buf)]
            self._missing, self._skip = self.needed - len(self.buf), CRLF_SIZE
            self.buf.clear()

    def _gather(self, data: bytes | memoryview) -> memoryview:
        """Keep what `data` holds of the body; returns what follows it (the next messages)."""
        assert self._pieces is not None
        view = memoryview(data)
        take = min(len(view), self._missing)
        if take:
            self._pieces.append(view[:take])
            self._missing -= take
        skip = min(len(view) - take, self._skip)
        self._skip -= skip
        if not self._missing and not self._skip:
            self._body = b"".join(self._pieces)
            self._pieces = None
        return view[take + skip :]
