"""One owner for a run directory's life: create or reopen it, hold its lock, keep status.json true.

    running -> completed | failed | interrupted | diverged
    interrupted -> pruned      (a sweep's pruner stopped it: `mark_pruned`, by the sweep driver)

Every transition happens inside `Run.guarded`, so no failure path leaves `running`
behind; a third signal, which exits at once, writes its status through `abandon`.
While a run is `running` its process rewrites a heartbeat every HEARTBEAT_SECONDS, and
status.json names the pid and host: a reader (`effective_state`) reports a `running`
run whose process is gone as `crashed`, which `kexp resume` continues.

A second process on the same run is refused by an flock on <run>/.lock; the kernel drops
the lock when its holder dies, so a dead process's lock is reclaimed without a trace.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kexp.errors import Diverged, Interrupted, ResumeRefused, RunDirError, describe_os_error, repeats_once
from kexp.run.dirs import create_named_run_dir, create_run_dir
from kexp.run.files import RunFiles
from kexp.run.io import now_iso, parse_time
from kexp.run.records import Metrics, Status, add_env_attempt, read_env, read_metrics, read_status, write_status

HEARTBEAT_SECONDS = 30.0
# A `running` run on another host whose heartbeat is older than this is presumed dead
# (on this host the pid answers that directly).
STALE_SECONDS = 180.0
STATES = ("running", "completed", "failed", "interrupted", "diverged", "pruned")


class Run:
    """A run directory held by this process: its lock, its status and its heartbeat."""

    def __init__(self, path: Path, lock_fd: int | None, attempt: int, started: str) -> None:
        self.path = path
        self.lock_fd = lock_fd
        self.attempt = attempt
        self.started = started
        self.state: str | None = None
        self.fields: dict[str, Any] = {}
        self._mutex = threading.RLock()  # re-entrant: a signal handler may write while the main thread is writing
        self._stop = threading.Event()
        self._written = 0.0

    def set_status(self, state: str, **fields: Any) -> None:
        with self._mutex:
            self.state = state
            self.fields.update(fields)
            self._written = time.monotonic()
            now = now_iso()
            write_status(self.path, state, started=self.started, attempt=self.attempt, pid=os.getpid(),
                         pid_started=process_start_ticks(os.getpid()), host=socket.gethostname(), heartbeat=now, **self.fields)

    def begin(self, **fields: Any) -> None:
        self.set_status("running", attempt_started=now_iso(), ended=None, error=None, signal=None, exit_code=None, **fields)
        self.log(f"attempt {self.attempt} started by pid {os.getpid()} on {socket.gethostname()}")

    def progress(self, force: bool = True, **fields: Any) -> None:
        """Record progress (member, epoch, checkpoint) in status.json; only while running.

        With force=False the file is rewritten at most once a second (Pima's 150 epochs take
        0.1 s each: an fsynced write per epoch would cost more than the epoch); the fields are
        kept and go out with the next write, at the latest the heartbeat or the final status."""
        with self._mutex:
            if self.state != "running":
                return
            if force or time.monotonic() - self._written >= 1.0:
                self.set_status("running", **fields)
            else:
                self.fields.update(fields)

    def complete(self) -> None:
        self.set_status("completed", ended=now_iso(), exit_code=0)
        self.log("completed")

    def abandon(self, signal) -> None:
        """A third signal after `signal`: exit now (128 + signal), but not with `running` on disk."""
        self.set_status("interrupted", ended=now_iso(), signal=signal.name, exit_code=128 + signal,
                        error=f"quit at once by a third signal after {signal.name}; the last checkpoint on disk is kept")

    def record_stop(self, exc: BaseException) -> None:
        """The one place that turns an exception into interrupted, diverged or failed."""
        ended = now_iso()
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
            code = exc.exit_code if isinstance(exc, Interrupted) else 130
            note = getattr(exc, "kexp_checkpoint", "")
            self.set_status("interrupted", ended=ended, signal=name, exit_code=code, error=f"interrupted by {name}{note}")
            if isinstance(exc, Interrupted):
                exc.detail = f"{note}; continue with: kexp resume {self.path}"
        elif isinstance(exc, Diverged):
            self.set_status("diverged", ended=ended, exit_code=exc.exit_code, error=str(exc))
        else:
            code = getattr(exc, "exit_code", 1)
            error = describe_os_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            try:
                self.set_status("failed", ended=ended, exit_code=code, error=error)
            except OSError:  # the disk that failed the run refuses its status too: the original error is the one to report
                self.state, self.fields["error"] = "failed", error
            self.log("".join(traceback.format_exception(exc)).rstrip())
        self.log(f"{self.state}: {self.fields.get('error')}")

    def log(self, message: str) -> None:
        with contextlib.suppress(OSError), open(RunFiles(self.path).log, "a", encoding="utf-8") as f:
            f.write(f"{now_iso()} {message}\n")

    @contextlib.contextmanager
    def library_warnings_logged(self) -> Iterator[None]:
        """Warnings the libraries log (TensorFlow's retracing notes, MLflow's) go to log.txt while
        the run lasts; whether they also reach the screen is the CLI's choice (--verbose)."""
        handler = LogToRun(self)
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self.progress()

    @contextlib.contextmanager
    def guarded(self, guard) -> Iterator[Run]:
        """Signals wait for a batch boundary; any way out of the block leaves a final status."""
        guard.on_abandon = self.abandon
        beat = threading.Thread(target=self._beat, name="kexp-heartbeat", daemon=True)
        beat.start()
        try:
            with guard.deferred(), self.library_warnings_logged():
                yield self
                if self.state == "running":
                    raise RuntimeError("the run ended without a final status")  # a bug in kexp, never a success
        except BaseException as exc:
            with guard.deferred():
                self.record_stop(exc)
            raise
        finally:
            self._stop.set()
            guard.on_abandon = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


class LogToRun(logging.Handler):
    """A logging handler that appends each warning to the run's log.txt, on one line."""

    def __init__(self, run: Run) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.run.log(f"{record.levelname.lower()}: {record.name}: {' '.join(record.getMessage().split())}")


_PAUSES: dict[str, int] = {}


def pause_for_tests(point: str) -> None:
    """KEXP_TEST_PAUSE=<point>[@<n>]:<file> makes the run create <file> the n-th time (default
    1st) it reaches <point> and wait 2 s there, so a test can send a signal or SIGKILL at
    exactly that moment. Points: checkpoint (files written, not yet renamed), finish."""
    setting, _, marker = os.environ.get("KEXP_TEST_PAUSE", "").partition(":")
    name, _, nth = setting.partition("@")
    if name != point or not marker:
        return
    _PAUSES[point] = _PAUSES.get(point, 0) + 1
    if _PAUSES[point] == int(nth or 1):
        Path(marker).touch()
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # short sleeps: a deferred signal handler runs between them
            time.sleep(0.05)


def create_run(runs_dir: Path, name: str, path: Path | None = None) -> Run:
    """A new run under runs_dir, or at exactly `path` when the caller chose it (it must be new or empty)."""
    path = create_named_run_dir(path) if path is not None else create_run_dir(runs_dir, name)
    return Run(path, lock_run(path), attempt=1, started=now_iso())


def reopen_run(run_dir: Path) -> tuple[Run, Status]:
    """Lock an existing run for another attempt; its status as it was (before this process)."""
    run_dir = Path(run_dir)
    files = RunFiles(run_dir)
    if not files.config.is_file() or not files.status.is_file():
        raise RunDirError(f"{run_dir}: not a kexp run directory (no {files.config.name} or {files.status.name})")
    lock = lock_run(run_dir)
    status = read_status(run_dir)
    return Run(run_dir, lock, attempt=int(status.attempt or 1) + 1, started=status.started or now_iso()), status


def read_completed(run_dir: Path) -> Metrics | None:
    """The metrics of a run whose status is `completed` (final: nothing can change it), else None."""
    with contextlib.suppress(RunDirError):
        if RunFiles(run_dir).status.is_file() and read_status(run_dir).state == "completed":
            return read_metrics(run_dir)
    return None


def lock_run(run_dir: Path) -> int | None:
    """An exclusive flock on <run>/.lock, held until this process exits; RunDirError if another holds it.

    The holder writes its pid, host and start time into the lock file at once: status.json still
    names the previous attempt's (dead) process until the new attempt begins, so only the lock
    file can say who holds the run in that window."""
    try:
        fd = os.open(RunFiles(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot take the run's lock file {RunFiles(run_dir).lock}: {exc.strerror}"
                          f"{'; the run directory is read-only: copy it to a writable folder to continue it' if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else ''}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirError(f"{run_dir}: in use by another kexp process ({holder(run_dir)}); wait for it to end, or stop it first") from None
        return None  # a filesystem without locks: run unlocked rather than not at all
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, only unnamed
        text = json.dumps({"pid": os.getpid(), "pid_started": process_start_ticks(os.getpid()), "host": socket.gethostname(), "since": now_iso()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    return fd


def holder(run_dir: Path) -> str:
    """Who holds the run's lock, from the lock file, and what status.json says the run is meanwhile."""
    status = Status()
    with contextlib.suppress(Exception):
        status = read_status(run_dir)
    lock: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        lock = json.loads(RunFiles(run_dir).lock.read_text(encoding="utf-8"))
    if not isinstance(lock, dict) or "pid" not in lock:  # a lock taken by kexp 0.2, which wrote nothing in it
        return f"pid {status.pid} on {status.host}, heartbeat {status.heartbeat}" if status.document else "status unknown"
    holder_text = f"pid {lock.get('pid')} on {lock.get('host')} since {lock.get('since')}"
    if status.pid == lock.get("pid") and status.host == lock.get("host"):
        return f"{holder_text}, {status.state}, heartbeat {status.heartbeat}"
    state = status.state or "unknown"
    return f"{holder_text}, starting: the run is still recorded as {state} by its previous attempt"


def process_start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), so a reused pid is not mistaken for the run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux: from /proc), for start-up timings; None elsewhere."""
    started = process_start_ticks(os.getpid())
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # both clocks tick in hundredths of a second: more digits would be float noise (3.0900000000001455)
    return None if started is None else round(uptime - started / os.sysconf("SC_CLK_TCK"), 2)


def process_alive(pid: int, started_ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    if process_state(pid) in ("Z", "X"):  # killed, not yet reaped (its parent died too): gone all the same
        return False
    now_ticks = process_start_ticks(pid)
    return started_ticks is None or now_ticks is None or now_ticks == started_ticks


def process_state(pid: int) -> str | None:
    """The process's state letter in /proc (R, S, D, Z for a zombie ...); None where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def effective_state(status: Status, now: datetime | None = None) -> str | None:
    """The recorded state, except that `running` whose process is gone is `crashed`."""
    if status.state != "running":
        return status.state
    if status.host == socket.gethostname() and isinstance(status.pid, int):
        return "running" if process_alive(status.pid, status.pid_started) else "crashed"
    beat = parse_time(status.heartbeat or status.updated)
    if beat is not None and ((now or datetime.now(UTC)) - beat).total_seconds() > STALE_SECONDS:
        return "crashed"
    return "running"


def mark_pruned(run_dir: Path, epoch: int, metric: str, value: float | None) -> None:
    """A trial the sweep's pruner stopped (SIGTERM, so its own status says interrupted or, when the signal came
    as it finished, completed): recorded as `pruned`, with the epoch it was judged at and its value then."""
    try:
        status = read_status(run_dir)
    except RunDirError:
        return  # it never wrote a status: the sweep's manifest is the only record
    fields = {k: v for k, v in status.document.items() if k not in ("state", "updated", "error", "signal")}
    write_status(run_dir, "pruned", **fields, pruned_at=epoch, pruned_by=f"the sweep's pruner: {metric} {value:.4g} at epoch {epoch}"
                 if value is not None else "the sweep's pruner")


def mark_failed_by_peer(run_dir: Path, error: str) -> bool:
    """A multi-process run one of whose other processes died (kexp.train.launch): `failed`, naming that process,
    whether process 0 recorded nothing (JAX's runtime or the launcher stopped it) or only the broken collective
    it saw as a failure of its own. True if it was recorded here."""
    try:
        status = read_status(run_dir)
    except RunDirError:
        return False  # it never wrote a status: nothing was started
    if status.state not in ("running", "failed"):
        return False  # process 0 recorded the end itself (interrupted, completed)
    seen = f" (process 0 then stopped: {repeats_once(status.error)[:300]})" if status.state == "failed" and status.error else ""
    fields = {k: v for k, v in status.document.items() if k not in ("state", "updated", "error", "signal", "ended", "exit_code")}
    error = f"{error}{seen}; continue with: kexp resume {run_dir}"
    write_status(run_dir, "failed", **fields, ended=now_iso(), exit_code=1, error=error)
    with contextlib.suppress(OSError), open(RunFiles(run_dir).log, "a", encoding="utf-8") as f:
        f.write(f"{now_iso()} failed: {error}\n")
    return True


def check_resumable(run_dir: Path, status: Status, allow_changed_code: bool = False) -> tuple[Any, list[str]]:
    """The run's spec, if it can be continued, and warnings (a plugin changed, with `allow_changed_code`);
    ResumeRefused, or PluginError for a changed plugin, saying why not."""
    from kexp.plugins import PluginRecord, check_recorded
    from kexp.spec import ExperimentSpec, load_spec

    if effective_state(status) == "diverged":
        raise ResumeRefused(f"{run_dir}: the run diverged ({status.error}); the same spec would diverge again: "
                            "train a new run with a lower train.optimizer.learning_rate")
    config = RunFiles(run_dir).config
    env = read_env(run_dir)
    warnings = check_recorded([PluginRecord.from_json(p) for p in env.plugins or []], run_dir, allow_changed_code)
    spec = load_spec(config)
    if env.spec is not None:
        changes = spec_changes(ExperimentSpec.model_validate(env.spec), spec)
        if changes:
            raise ResumeRefused(f"{config} was edited since the run started ({'; '.join(changes)}); "
                                "a resumed run must continue the same experiment: undo the edit, or train a new run")
    return spec, warnings


def spec_changes(before, after) -> list[str]:
    from kexp.report.aggregate import flatten_spec

    old, new = flatten_spec(before.model_dump(mode="json")), flatten_spec(after.model_dump(mode="json"))
    return [f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def record_attempt(run: Run, argv: list[str]) -> None:
    """env.json lists every attempt (host, pid, time, command) of a resumed run."""
    add_env_attempt(run.path, {"attempt": run.attempt, "started": now_iso(), "host": socket.gethostname(), "pid": os.getpid(), "argv": argv})
