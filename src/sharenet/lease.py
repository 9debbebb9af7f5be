"""One trainer per run directory: a lease file (host, pid, heartbeat) in the folder.

Two trainers writing one run directory would interleave their metrics and checkpoints. On one
machine a file lock would do, but a study on a cluster (`sharenet study --backend ray`) retries a
run on another node when its node is lost, and the lost node's trainer may still be writing the
shared folder, or be gone without a trace. So the holder writes who it is and renews a heartbeat;
another trainer takes the lease over only when the holder is provably gone: its pid is dead (same
host), or its heartbeat is older than STALE_S (another host, where pids cannot be checked). A live
lease is refused in one line.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .errors import SharenetError

LEASE = "lease.json"
HEARTBEAT_S = 5.0  # how often the holder renews its heartbeat
STALE_S = 60.0  # a heartbeat this old is a lost holder's, on a host whose pids this one cannot see


class LeaseHeld(SharenetError):
    """The run directory is being written by a live trainer."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def holder(folder: Path) -> dict | None:
    """The lease's record, or None when there is none (or it cannot be read: a half-written one
    cannot exist, every write is a rename)."""
    try:
        return json.loads((Path(folder) / LEASE).read_text())
    except (OSError, ValueError):
        return None


def live(record: dict, now: float | None = None) -> bool:
    """Whether the lease's holder may still be writing: its pid is alive (on this host), or its
    heartbeat is recent (on another host)."""
    if record.get("host") == socket.gethostname():
        return _alive(int(record.get("pid", -1)))
    return (now or time.time()) - float(record.get("heartbeat", 0)) < STALE_S


class Lease:
    """This process's hold on a run directory, renewed by a daemon thread until `release`."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LEASE
        self.token, self.pid = uuid.uuid4().hex, os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time(), "token": self.token}

    def _write(self, replace: bool) -> bool:
        """Write the record under a temporary name, then link it in (only if there is no lease:
        atomic create-if-absent) or rename it over the old one (a take-over)."""
        tmp = self.path.with_name(f".{LEASE}.{self.token}")
        tmp.write_text(json.dumps(self._record()))
        try:
            if replace:
                os.replace(tmp, self.path)
                return True
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> Lease:
        for _ in range(3):  # a lease released between our look and our write: look again
            if self._write(replace=False):
                break
            record = holder(self.path.parent)
            if record is None:
                continue
            if record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
                self._write(replace=True)  # this process's own earlier lease (an in-process rerun)
                break
            if live(record):
                age = time.time() - float(record.get("heartbeat", 0))
                raise LeaseHeld(
                    f"{self.path.parent} is being written by another trainer ({record.get('host')} pid "
                    f"{record.get('pid')}, heartbeat {age:.0f} s ago): one trainer per run directory; "
                    "stop that one first, or wait for it to stop"
                )
            self._write(replace=True)  # its holder is gone: take it over
            time.sleep(0.05)  # two takers at once: the later rename wins, the other sees it below
            if (holder(self.path.parent) or {}).get("token") == self.token:
                break
        else:
            raise LeaseHeld(f"{self.path.parent}: could not take its lease ({LEASE} keeps changing)")
        self._thread = threading.Thread(target=self._renew, name="sharenet-lease", daemon=True)
        self._thread.start()
        _HELD.append(self)
        return self

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            record = holder(self.path.parent)
            if record is not None and record.get("token") != self.token:
                return  # taken over (this holder was presumed lost): no longer ours to renew
            with contextlib.suppress(OSError):  # a full or lost disk: the trainer's own writes report it
                self._write(replace=True)

    def release(self) -> None:
        if os.getpid() != self.pid:  # a forked child: the lease is its parent's
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (holder(self.path.parent) or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        if self in _HELD:
            _HELD.remove(self)


_HELD: list[Lease] = []


def release_all() -> None:
    """Release every lease this process holds (the end of a fit, or of the process)."""
    for lease in list(_HELD):
        lease.release()


atexit.register(release_all)
