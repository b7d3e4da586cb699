"""Shared plumbing for console scripts: user mistakes become one line on stderr, not tracebacks."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence

from pvae.errors import PVAEError

#: Exit code for a user error (bad input, missing file, ...), as argparse uses.
EXIT_USER_ERROR = 2
#: Exit code after Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None) -> int:
    """Run ``main(argv)``; map ``PVAEError`` to ``prog: error: ...`` and exit code 2."""
    try:
        return int(main(argv) or 0)
    except PVAEError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it), for a server this command
    starts in another process. In-process servers bind port 0 and report the port instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
