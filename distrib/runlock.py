"""One live writer per run folder: an exclusive ``flock`` on the run's lock file.

Which process holds it: the process that owns the run's process tree. ``brainxl train
--nproc N`` holds it in the launcher (its ranks see that their parent holds it and go
on); a single process, a SLURM job (srun, submitit) or torchrun holds it in global
rank 0, which takes it after joining the process group and tells every rank the outcome,
so a refused launch fails at once on all ranks instead of leaving them waiting.

The lock file records the holder (host, pid, SLURM job id, start time, command). A second
launch of the same run fails at once with :class:`RunLockedError` naming the holder and
the fix. The kernel drops an ``flock`` when its holder dies, so a crashed or killed run
never blocks its resume. Beyond that the lock is taken over when

- the recorded holder is a process of this host that no longer exists (a child that
  inherited the descriptor outlived it: forked children close it, see below), or
- the holder is an earlier attempt of the same SLURM job (a requeue): on another node at
  once (SLURM runs one attempt of a job at a time), on this node after ``takeover_wait_s``
  (the old attempt is being killed).

Taking over unlinks the lock file and locks a fresh one; a holder that keeps running then
holds a lock on a file nobody else opens.

Shared file systems: ``flock`` is enforced across nodes on NFSv3 (through NLM) and NFSv4
as long as the mount does not use ``local_lock=flock`` or ``local_lock=all``, on GPFS, and
on Lustre mounted with ``-o flock`` (not ``localflock``). On NFS an ``flock`` is a POSIX
lock on the server, which a process loses when it closes *any* descriptor of the file, so
the holder never opens the lock file a second time; a node that dies keeps its lock until
the server's lease expires (NFSv4: about 90 s). Where locks are node-local only, two nodes
can both take the lock: keep the run root on a file system with working locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_HELD_FDS: set[int] = set()


def _close_in_child() -> None:
    # A forked child (a DataLoader worker...) must not keep the run locked after its parent
    # is gone: drop its copy of the descriptor. The parent's lock is unaffected.
    for fd in list(_HELD_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLockedError(ValueError):
    """Another live process writes this run folder."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run lock (what the lock file records).

    Attributes
    ----------
    host : str
        Host name of the holder.
    pid : int
        Its process id on that host.
    slurm_job : str
        Its SLURM job id (``""`` outside SLURM).
    started : str
        When it took the lock (ISO 8601, UTC).
    command : str
        Its command line (shortened).
    """

    host: str
    pid: int
    slurm_job: str = ""
    started: str = ""
    command: str = ""

    @classmethod
    def this_process(cls) -> LockHolder:
        """The record for the calling process."""
        from brainxl.distrib.env import slurm_job

        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            slurm_job=slurm_job(),
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            command=command[:300],
        )

    def on_this_host(self) -> bool:
        """True when the holder runs on this machine."""
        return self.host == socket.gethostname()

    def is_alive(self) -> bool | None:
        """Whether the holder process exists: None when it runs on another host."""
        if not self.on_this_host():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        """``pid 123 on host node1 (SLURM job 55), since 2026-...: brainxl train ...``."""
        job = f" (SLURM job {self.slurm_job})" if self.slurm_job else ""
        since = f", since {self.started}" if self.started else ""
        cmd = f": {self.command}" if self.command else ""
        return f"pid {self.pid} on host {self.host}{job}{since}{cmd}"

    def stop_hint(self) -> str:
        """How to stop the holder."""
        if self.slurm_job:
            return f"scancel {self.slurm_job.split('_')[0]}"
        return f"kill {self.pid} on {self.host}"


def _parse(text: str) -> LockHolder | None:
    try:
        raw: Any = json.loads(text)
        return LockHolder(
            host=str(raw["host"]),
            pid=int(raw["pid"]),
            slurm_job=str(raw.get("slurm_job", "")),
            started=str(raw.get("started", "")),
            command=str(raw.get("command", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_holder(path: str | os.PathLike[str]) -> LockHolder | None:
    """The holder recorded in lock file ``path`` (None: no file or no record).

    Never call this in the process that holds the lock (on NFS, closing a second
    descriptor of the file releases the holder's lock).
    """
    try:
        return _parse(Path(path).read_text())
    except OSError:
        return None


_RUN_FRESH = "pass run.name=<new name> to start a separate run"


def _locked_message(
    path: Path, holder: LockHolder | None, kind: str = "run folder", fresh: str = _RUN_FRESH
) -> str:
    folder = path.parent
    who = holder.describe() if holder else "another process (it has not recorded itself yet)"
    stop = f" ({holder.stop_hint()})" if holder else ""
    return (
        f"{kind} {folder} is in use by {who}; one {kind} takes one live process tree. "
        f"Wait for it to finish, stop it{stop} and rerun to resume, or {fresh}"
    )


class RunLock:
    """Exclusive lock on a run folder's lock file (``fcntl.flock``, non-blocking).

    Parameters
    ----------
    path : path
        The lock file (``<run folder>/run.lock``); its folder is created.
    takeover_wait_s : float
        How long an attempt of a requeued SLURM job waits for the earlier attempt on the
        same node to release the lock before taking it over.
    kind, fresh : str
        For the refusal message: what the folder is and how to start a separate one.

    Examples
    --------
    >>> with RunLock(RunDir(folder).lock_path):  # doctest: +SKIP
    ...     train()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        takeover_wait_s: float = 60.0,
        kind: str = "run folder",
        fresh: str = _RUN_FRESH,
    ) -> None:
        self.path = Path(path)
        self.takeover_wait_s = takeover_wait_s
        self.kind, self.fresh = kind, fresh
        self.holder: LockHolder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> LockHolder:
        """Take the lock now or fail.

        Returns
        -------
        holder : LockHolder
            This process's record, written into the lock file.

        Raises
        ------
        RunLockedError
            Another live process holds it (the message names it and the fix).
        """
        if self._fd is not None:
            return self.holder  # type: ignore[return-value]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = LockHolder.this_process()
        t0 = time.monotonic()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder, ident = self._read_fd(fd)
                os.close(fd)
                action = self._contend(holder, me, time.monotonic() - t0)
                if action == "fail":
                    raise RunLockedError(
                        _locked_message(self.path, holder, self.kind, self.fresh)
                    ) from None
                if action == "take":
                    self._unlink_if(ident)
                else:
                    time.sleep(0.2)
                continue
            if not self._still_linked(fd):  # taken over and unlinked while we waited
                os.close(fd)
                continue
            data = json.dumps(asdict(me), indent=2).encode() + b"\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd, self.holder = fd, me
            _HELD_FDS.add(fd)
            return me

    def release(self) -> None:
        """Give the lock up (the file stays; its record is stale until the next holder)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD_FDS.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _read_fd(fd: int) -> tuple[LockHolder | None, tuple[int, int]]:
        st = os.fstat(fd)
        text = os.pread(fd, 64 * 1024, 0).decode(errors="replace")
        return _parse(text), (st.st_dev, st.st_ino)

    def _still_linked(self, fd: int) -> bool:
        try:
            cur = os.stat(self.path)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino)

    def _unlink_if(self, ident: tuple[int, int]) -> None:
        try:
            cur = os.stat(self.path)
            if (cur.st_dev, cur.st_ino) == ident:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _contend(self, holder: LockHolder | None, me: LockHolder, waited: float) -> str:
        """``"take"``, ``"wait"`` or ``"fail"`` against a lock held by ``holder``."""
        if holder is None:  # the winner has not written its record yet
            return "wait" if waited < 5.0 else "fail"
        alive = holder.is_alive()
        if alive is False:
            return "take"  # recorded holder gone; a descendant kept the descriptor
        if holder.slurm_job and holder.slurm_job == me.slurm_job:  # a requeued job
            if alive is None or waited >= self.takeover_wait_s:
                return "take"
            return "wait"
        return "fail"


def probe(path: str | os.PathLike[str]) -> LockHolder | None:
    """The live holder of lock file ``path``, or None when it is free (or absent).

    For a command that is about to start the run elsewhere (``brainxl submit``): it takes
    and releases the lock at once. Call it only in a process that does not hold the lock.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder, _ = RunLock._read_fd(fd)
        return holder or LockHolder(host="?", pid=0)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_free(path: str | os.PathLike[str]) -> None:
    """Raise :class:`RunLockedError` when a live process holds lock file ``path``."""
    holder = probe(path)
    if holder is not None:
        raise RunLockedError(_locked_message(Path(path), holder))
