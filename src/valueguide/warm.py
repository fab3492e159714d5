"""A job's command under ``valueguide warm-run``: ``python -m valueguide.warm ARGS`` (the Snakefile's CLI
when ``VALUEGUIDE_WARM`` names a server's socket) has the warm server (``warm_server``) run ``valueguide
ARGS`` with this process's streams, folder and environment; with no server to reach, it runs here.

Apart from the server so that the two ends do not import each other: ``cli``'s ``warm-run`` starts the
server, and this command falls back to ``cli``.
"""

from __future__ import annotations

import json
import os
import socket
import sys

from .warm_server import CODE, ENV, LENGTH, read_exactly


def _run_cli(argv: list[str]) -> int:
    from .cli import main

    return main(argv)


def ask_server(path: str, argv: list[str]) -> int | None:
    """Run ``argv`` on the server at ``path`` with this process's streams; its exit status, or None when
    no server answers there (nothing was run)."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        return None
    with conn:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [LENGTH.pack(len(request)) + request], [0, 1, 2])
        try:
            reply = read_exactly(conn, CODE.size)
        except OSError:
            reply = None
    if reply is None:
        print("error: the warm job server stopped before the job ended", file=sys.stderr)
        return 1
    return CODE.unpack(reply)[0]


def main(argv: list[str] | None = None) -> int:
    """A job's command: on the warm server when one is named and answers, else in this process."""
    argv = sys.argv[1:] if argv is None else argv
    path = os.environ.get(ENV)
    try:
        code = ask_server(path, argv) if path else None
    except KeyboardInterrupt:  # Ctrl-C: the job's child has it too, and says so in the job's log
        return 130
    return _run_cli(argv) if code is None else code


if __name__ == "__main__":
    sys.exit(main())
