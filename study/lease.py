"""One driver per study: a lease object ``OUT/<study>/lease.json`` in the output itself.

`study run` and `study measure` take the study's lease before any work and hold it
until they end: a JSON object with the holder's host, pid, command, start time,
a random token and a heartbeat (Unix time) that a background thread rewrites every
`HEARTBEAT_S` seconds. It lives beside the rows, so it works wherever they do (a
local or shared folder, an object store) and needs nothing else.

- A second driver that finds a live lease (heartbeat younger than `LEASE_TIMEOUT_S`)
  stops before any work with `LeaseHeld`, naming the holder (exit 2 on the command line).
- A stale lease is taken over, with a warning naming the old holder: its heartbeat is
  older than `LEASE_TIMEOUT_S` (its driver was killed, or lost its machine), or it was
  written on this host (same host name) by a process id that no longer exists, or its
  heartbeat is no time a live holder writes (not finite, or beyond now + `SKEW_S`).
- The holder deletes its lease when it ends (normally, on Ctrl-C, SIGTERM or a write
  failure); SIGKILL leaves it behind, to be taken over once stale.

Limits, said plainly: the lease is written whole (`schema.write_atomic`) and read back
after `SETTLE_S` seconds, but an object store offers pyarrow no create-if-absent,
so two drivers started within the same second may both believe they hold it (the
later writer wins the read-back in most cases, not all). Staleness compares the
heartbeat written by the holder's clock with the reader's clock: clocks must agree
to well within `LEASE_TIMEOUT_S`. A holder whose heartbeat finds another's token (it
stalled longer than the timeout and was taken over) sets `lost`; the driver then stops.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .schema import now, write_atomic
from .storage import StorageError, Store

log = logging.getLogger("study.lease")

LEASE_TIMEOUT_S = 300.0  # a heartbeat older than this: the lease is stale (and so are temporary files)
HEARTBEAT_S = 30.0       # how often the holder rewrites its heartbeat
SETTLE_S = 1.0           # pause between writing a new lease and reading it back
SKEW_S = 60.0            # a heartbeat later than now + this is no time a live holder wrote


class LeaseHeld(StorageError):
    """Another driver holds the study's lease; the message names it."""


def _describe(lease: dict, now: float) -> str:
    beat = float(lease.get("heartbeat", 0))
    when = (f"{now - beat:.0f} s ago" if math.isfinite(beat) and beat <= now + SKEW_S
            else f"{beat!r}, not a time a live holder writes")
    return (f"{lease.get('command', 'a driver')} on host {lease.get('host', '?')}, pid "
            f"{lease.get('pid', '?')}, started {lease.get('started_at', '?')}, last heartbeat {when}")


def _bad_beat(lease: dict, now: float) -> str:
    """Why the lease's heartbeat is no time a live holder wrote ("" when it is one): not finite,
    or later than now + `SKEW_S` (a clock far ahead, or a hand-edited lease)."""
    beat = float(lease["heartbeat"])
    if not math.isfinite(beat):
        return "its heartbeat is not a time"
    if beat > now + SKEW_S:
        return f"its heartbeat is {beat - now:.3g} s in the future"
    return ""


def _dead_here(lease: dict) -> bool:
    """Whether the lease was written on this host by a process that no longer exists."""
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease["pid"]), 0)
    except (KeyError, TypeError, ValueError):
        return False
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class Lease:
    """The lease of ``store``'s study; use as a context manager (`acquire`, `release`)."""

    def __init__(self, store: Store, command: str = "study run"):
        self.store = store
        self.path = f"{store.base}/lease.json"
        self.command = command
        self.token = uuid.uuid4().hex
        self.started_at = now().isoformat()
        self.lost: str | None = None  # set when another driver took the lease over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict | None:
        """The stored lease (None: none; an unreadable one counts as stale: heartbeat 0)."""
        try:
            with self.store.fs.open_input_stream(self.path) as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:  # pyarrow raises OSError for some missing objects too
            if "not found" in str(e).lower() or "no such file" in str(e).lower():
                return None
            raise
        try:
            lease = json.loads(data)
            float(lease["heartbeat"])
            return lease
        except (ValueError, KeyError, TypeError):
            return {"heartbeat": 0, "host": "?", "pid": "?", "command": "an unreadable lease"}

    def _write(self) -> None:
        lease = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                 "started_at": self.started_at, "heartbeat": time.time(), "token": self.token}
        write_atomic(self.path, json.dumps(lease).encode(), self.store.fs)

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming its live holder; then heartbeat."""
        where = self.store.uri(self.store.base)
        held = self.read()
        if held is not None and held.get("token") != self.token:
            now = time.time()
            bad = _bad_beat(held, now)
            if not bad and now - float(held["heartbeat"]) < LEASE_TIMEOUT_S and not _dead_here(held):
                raise LeaseHeld(
                    f"study {self.store.study!r} in {where} is held by {_describe(held, now)}. "
                    f"One driver per study: wait for it to end or stop it (a lease whose heartbeat "
                    f"is older than {LEASE_TIMEOUT_S:.0f} s is taken over); if no driver runs, "
                    f"delete {self.store.uri(self.path)}")
            log.warning("taking over the stale lease of study %r in %s: %s (%s)", self.store.study,
                        where, _describe(held, now), bad or ("its process is gone" if _dead_here(held)
                                                             else f"older than {LEASE_TIMEOUT_S:.0f} s"))
        self._write()
        time.sleep(SETTLE_S)
        now_held = self.read()
        if now_held is None or now_held.get("token") != self.token:
            raise LeaseHeld(f"study {self.store.study!r} in {where}: another driver took the lease "
                            f"at the same moment ({_describe(now_held or {}, time.time())})")
        self._thread = threading.Thread(target=self._beat, name="study-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                held = self.read()
                if held is None or held.get("token") != self.token:
                    self.lost = (f"the lease of study {self.store.study!r} was taken over by "
                                 f"{_describe(held or {}, time.time())}")
                    log.error("%s; stopping", self.lost)
                    return
                self._write()
            except Exception as e:  # the output failing: the runs' writes will say so too
                log.warning("could not refresh the lease %s: %s", self.store.uri(self.path), e)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            held = self.read()
            if held is not None and held.get("token") == self.token:
                self.store.fs.delete_file(self.path)
        except Exception as e:
            log.warning("could not remove the lease %s: %s", self.store.uri(self.path), e)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def held(store: Store, command: str) -> Iterator[Lease]:
    """A job's hold on its study: the output checked writable, the lease taken (`LeaseHeld`
    naming another driver that holds it), temporary files older than `LEASE_TIMEOUT_S` removed."""
    store.check_writable()
    with Lease(store, command) as lease:
        store.clean_tmp(LEASE_TIMEOUT_S)
        yield lease
