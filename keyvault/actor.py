"""Who is acting: the user, host, process id and program name behind a write or a read,
for the history and the access log. Names only: never an environment value."""

from __future__ import annotations

import getpass
import os
import socket
import sys
from pathlib import Path


def current_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = f"uid{os.getuid()}"
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return f"{user}@{socket.gethostname()} pid {os.getpid()} ({program})"
