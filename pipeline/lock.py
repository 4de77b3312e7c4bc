"""One writer per output: a lock file holding the writer's pid and host."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ccfm.errors import CCFMError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """Held while a stage writes `target`; a dead holder on this host is taken over, another host's
    lock only with `break_lock`."""

    def __init__(self, target: Path, break_lock: bool = False) -> None:
        self.path = Path(target).with_name(Path(target).name + ".lock")
        self.break_lock = break_lock

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        if not holder:  # empty or unreadable: its writer died between creating and filling it
            return True
        if holder.get("host") == socket.gethostname():
            return not _alive(int(holder.get("pid", -1)))
        return self.break_lock

    def __enter__(self) -> WriterLock:
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    raise CCFMError(
                        f"{self.path.name[:-5]} is being written by pid {holder.get('pid')} on "
                        f"{holder.get('host')} (lock {self.path}); wait for it, or if that job is gone "
                        "rerun with --break-lock"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            return self
        raise CCFMError(f"could not take the lock {self.path}; remove it by hand if no job is writing")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
