"""HTTP never answers 500 to input: bad parameters are 400 naming them, bad framing is 400 and closed, connections capped."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.api.params import ascii_count
from tests.api_harness import running_api

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("text, value", [("0", 0), ("42", 42), ("9" * 18, int("9" * 18)), ("", None), ("²", None),
                                         ("٣", None), ("-1", None), ("+1", None), (" 1", None), ("1" * 19, None),
                                         ("5" * 5000, None), ("1e3", None)])
def test_ascii_count_takes_only_ascii_digits_and_a_bounded_number_of_them(text: str, value: int | None) -> None:
    assert ascii_count(text) == value


QUERIES = {
    "/work/status?limit=%C2%B2": "limit",  # a superscript two: int() takes it
    "/work/status?limit=-3": "limit",
    "/api/events?after=" + "7" * 5000: "after",  # int() refuses over 4300 digits with a ValueError
    "/api/events?after=1&limit=%D9%A3": "limit",  # an Arabic-Indic three
    "/work/status?status=%FF%FE": "status",
}


def _raw(base: str, request: bytes) -> tuple[bytes, bool]:
    """Send raw bytes; the answer, and whether the server closed the connection afterwards."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):  # the server closing the connection ends the loop
            chunks.append(chunk)
        return b"".join(chunks), True


async def test_bad_parameters_and_framing_get_400_naming_them_and_never_a_traceback(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_api(nats_url, max_connections=4) as api:
        for path, name in QUERIES.items():
            answer = await api.get(path)
            assert answer.status == 400, (path, answer.body[:200])
            assert answer.json()["error"].startswith(f"{name}: "), answer.json()

        for length in ("\xb2", "1" * 5000, "-5", "ten"):
            request = f"POST /work/add HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode("latin-1")
            answer, closed = await asyncio.to_thread(_raw, api.base, request)
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
            assert b"Connection: close" in answer and closed
            assert b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1]
        answer, _ = await asyncio.to_thread(_raw, api.base, b"GARBAGE\r\n\r\n")
        assert b'"malformed request' in answer or answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert (await api.get("/health")).status in (200, 503), "still serving"
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"


async def test_connections_past_the_cap_are_answered_503_and_closed(nats_url: str, eventually: Any) -> None:
    async with running_api(nats_url, max_connections=3) as api:
        url = urlsplit(api.base)
        idle = [socket.create_connection((url.hostname, url.port), timeout=10) for _ in range(3)]
        try:
            async def refused() -> bytes:
                answer, _ = await asyncio.to_thread(_raw, api.base, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                return answer if answer.startswith(b"HTTP/1.1 503") else b""

            answer = await eventually(refused, timeout=10, message="a fourth connection refused")
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("too many connections")
        finally:
            for conn in idle:
                conn.close()
        assert (await api.get("/health")).status in (200, 503), "a slot is free again once they closed"
