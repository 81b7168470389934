"""A 413 the client can read (RFC 9112 §9.6, lingering close), over real sockets against uvicorn.

A client that sends its whole body before reading the answer (urllib sends ``Connection: close`` and
does exactly that) used to get ECONNRESET: the service answered 413 and closed with the unread body
still arriving. (On a keep-alive connection uvicorn reads the rest itself; every client here says
``Connection: close``.) The body here is several times larger than loopback socket buffers, so without the
lingering close these tests fail with a reset.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from cds_service.api.body import LINGER_FACTOR
from cds_service.main import create_app
from tests.conftest import make_settings
from tests.reliability.servers import ServiceThread
from tests.support import NOW

LIMIT = 8 * 1024 * 1024
PATH = "/cds-services/hip-weakness"
#: Past the limit, inside the lingering bound: 2.5 x the limit.
OVERSIZED = b'{"hook":"patient-view","pad":"' + b"x" * (LIMIT * 5 // 2) + b'"}'
SOCKET_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    settings = make_settings(tmp_path_factory.mktemp("linger"), max_request_bytes=LIMIT)
    with ServiceThread(create_app(settings, clock=lambda: NOW)) as running:
        yield running


def assert_too_long(status: int, body: bytes) -> None:
    assert status == 413
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-long"


def test_a_client_that_sends_everything_before_reading_gets_the_413(service: ServiceThread) -> None:
    request = urllib.request.Request(
        service.url + PATH, data=OVERSIZED, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT)
    assert_too_long(refused.value.code, refused.value.read())


def test_a_chunked_body_without_length_gets_the_413_too(service: ServiceThread) -> None:
    chunks = (OVERSIZED[i : i + 65536] for i in range(0, len(OVERSIZED), 65536))
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=SOCKET_TIMEOUT)
    try:
        connection.request(
            "POST",
            PATH,
            body=chunks,
            headers={"Content-Type": "application/json", "Connection": "close"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert_too_long(response.status, response.read())
    finally:
        connection.close()


def raw_post(service: ServiceThread, length: int, extra: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=SOCKET_TIMEOUT)
    sock.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n{extra}\r\n".encode()
    )
    return sock


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def test_a_client_waiting_for_100_continue_is_refused_at_once_and_never_asked_for_the_body(
    service: ServiceThread,
) -> None:
    """Expect: 100-continue with a declared length over the limit: the final 413 comes first, with
    no ``100 Continue`` before it, and without a byte of the body having been sent."""
    with raw_post(service, len(OVERSIZED), "Expect: 100-continue\r\n") as sock:
        status, body = read_answer(sock)
    assert_too_long(status, body)


def test_a_client_that_stops_sending_still_gets_its_413(service: ServiceThread) -> None:
    """The lingering read gives up on a client that goes silent; the answer is then sent."""
    with raw_post(service, len(OVERSIZED)) as sock:
        sock.sendall(OVERSIZED[: LIMIT // 4])
        status, body = read_answer(sock)
    assert_too_long(status, body)


def test_a_body_past_the_lingering_bound_is_not_read(service: ServiceThread) -> None:
    """Declared past the bound: answered straight away, whatever the client does next. Nothing
    of the body is sent here, so the answer can only come from the declared length."""
    with raw_post(service, LIMIT * LINGER_FACTOR + 1) as sock:
        status, body = read_answer(sock)
    assert_too_long(status, body)
