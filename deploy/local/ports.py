"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a TCP port that is currently free on 127.0.0.1 (bind to port 0, read it, close).

    There is an unavoidable race between closing the probe socket and the caller binding the
    port; callers start their server immediately after.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_base(count: int, tries: int = 200) -> int:
    """A base N such that N .. N+count-1 are all free on 127.0.0.1 now (for ``ODC_PORT_BASE`` in tests)."""
    import random

    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


__all__ = ["free_port", "free_port_base", "port_open"]
