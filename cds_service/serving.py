"""Several uvicorn workers, each with its own listening socket (SO_REUSEPORT), so the kernel spreads
connections across workers.

With uvicorn's default, workers share one listening socket and whichever wakes first accepts a whole
burst: measured, 49 of 50 keep-alive connections went to one of two workers (half the throughput, a
long tail). A load balancer's connection pool to an instance would do the same. With one socket per
worker and SO_REUSEPORT, Linux hashes each new connection to a worker.

uvicorn's supervisor (restarts, signals, graceful shutdown) is used unchanged: it hands every worker the
"sockets" it was given, by pickling. We give it a ``ListenerRecipe``, whose unpickling, in the worker,
creates that worker's socket. The parent never listens (a listening socket in the parent would receive
its share of connections and never accept them); it only checks the port is free, to fail fast.
"""

from __future__ import annotations

import logging
import socket
from typing import cast

import uvicorn
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")

#: uvicorn's own exit status when the server could not start.
STARTUP_FAILURE = 3


def worker_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to the port the other workers share (SO_REUSEPORT), not yet listening.

    The server's event loop calls ``listen()`` once the application has started, so a worker that is
    still importing or running its start-up gets no connections (the kernel only spreads them over
    listening sockets) and a worker that failed to start never strands any in its queue."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class ListenerRecipe:
    """Stands for a socket in the parent; becomes a fresh ``worker_socket`` in each worker."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        return worker_socket, (self.host, self.port)


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(config: uvicorn.Config) -> int:
    """Run ``config.workers`` workers (one process when 1), supervised by uvicorn; the exit status."""
    if config.workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    if not port_is_free(config.host, config.port):
        logger.error("%s:%s is already in use", config.host, config.port)
        return STARTUP_FAILURE
    logger.info("Listening on http://%s:%s (one socket per worker)", config.host, config.port)
    recipe = ListenerRecipe(config.host, config.port)
    Multiprocess(config, sockets=[cast(socket.socket, recipe)]).run()
    return 0
