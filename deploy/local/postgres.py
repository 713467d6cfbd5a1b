"""A project-local PostgreSQL 15 + PostGIS cluster (Debian's packaged binaries, our own data dir).

PostgreSQL refuses to run as root: when we are root, ``initdb``/``pg_ctl`` run as an unprivileged
OS user (``postgres`` if it exists, else a system user ``odcpg`` is created; override with
``ODC_PG_OS_USER``) and the data dir is owned by that user.

Layout of ``data_dir``::

    pgdata/         PGDATA (initdb)
    run/            unix socket dir (falls back to /tmp/odcpg-<hash> if the path is too long)
    postgres.log    server log (pg_ctl -l)
    postgres.json   port/user/database, for PostgresCluster.from_data_dir() in another process
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deploy.local._proc import cmdline, group_alive, pid_alive, tail

log = logging.getLogger("deploy.local.postgres")

PG_MAJOR = "15"
PG_BIN = Path(os.environ.get("ODC_PG_BIN", f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
PG_SHARE = Path(f"/usr/share/postgresql/{PG_MAJOR}")
POSTGIS_CONTROL = PG_SHARE / "extension" / "postgis.control"
POSTGIS_PACKAGE = f"postgresql-{PG_MAJOR}-postgis-3"
SUPERUSER = "postgres"  # bootstrap superuser inside the cluster (socket + trust only)
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes incl. NUL


class PostgresSetupError(RuntimeError):
    """Installing, initialising or starting the local PostgreSQL cluster failed."""


# ------------------------------------------------------------------------------------ install


def _postgis_present() -> bool:
    return POSTGIS_CONTROL.is_file() and (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


def ensure_postgis_installed() -> None:
    """Install ``postgresql-15-postgis-3`` (pulls in postgresql-15) with apt-get if PostGIS's control
    file or the PostgreSQL 15 binaries are missing. Raises PostgresSetupError on failure."""
    if _postgis_present():
        return
    if os.geteuid() != 0:
        raise PostgresSetupError(
            f"PostGIS for PostgreSQL {PG_MAJOR} is not installed ({POSTGIS_CONTROL} missing) and we are "
            f"not root; run: sudo apt-get install -y {POSTGIS_PACKAGE}"
        )
    if shutil.which("apt-get") is None:
        raise PostgresSetupError(f"{POSTGIS_CONTROL} missing and no apt-get to install {POSTGIS_PACKAGE}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    for cmd in (
        ["apt-get", *lock_wait, "update"],
        ["apt-get", *lock_wait, "install", "-y", POSTGIS_PACKAGE],
    ):
        log.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, check=False, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            out = "\n".join(proc.stdout.splitlines()[-30:])
            raise PostgresSetupError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{out}")
    if not _postgis_present():
        raise PostgresSetupError(f"{POSTGIS_PACKAGE} installed but {POSTGIS_CONTROL} / {PG_BIN} still missing")


# ---------------------------------------------------------------------------------- OS user


def _os_user() -> pwd.struct_passwd:
    """The account that runs initdb/postgres."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    name = os.environ.get("ODC_PG_OS_USER")
    candidates = [name] if name else ["postgres", "odcpg"]
    for cand in candidates:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(cand)
    create = candidates[-1]
    proc = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", create],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise PostgresSetupError(f"cannot create OS user {create!r} to run PostgreSQL: {proc.stdout}")
    return pwd.getpwnam(create)


def _ensure_traversable(path: Path, pw: pwd.struct_passwd) -> None:
    """Give 'others' search (x) permission on ancestors the OS user could not traverse (e.g. pytest's
    0700 /tmp/pytest-of-root). Only the x bit is added: nothing becomes listable or readable."""
    if os.geteuid() != 0 or pw.pw_uid == 0:
        return
    for anc in reversed(path.parents):
        st = anc.stat()
        if st.st_uid == pw.pw_uid:
            continue
        if st.st_gid == pw.pw_gid and st.st_mode & stat.S_IXGRP:
            continue
        if not st.st_mode & stat.S_IXOTH:
            log.warning("adding o+x to %s so %s can reach its data dir", anc, pw.pw_name)
            os.chmod(anc, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


# ----------------------------------------------------------------------------------- cluster


class PostgresCluster:
    """PostgreSQL 15 + PostGIS on 127.0.0.1:``port`` with an app role/database (default odc/odc/odc).

    The app role is a superuser by default (``superuser=True``): tests and migrations may need to
    create extensions (PostGIS is not a trusted extension) or databases.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        user: str = "odc",
        password: str = "odc",
        database: str = "odc",
        superuser: bool = True,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.extra_settings = dict(extra_settings or {})  # e.g. pg_stat_statements for profiling
        self.port = int(port)
        self.user = user
        self.password = password
        self.database = database
        self.superuser = superuser
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.state_path = self.data_dir / "postgres.json"
        self.socket_dir = self._pick_socket_dir()
        self.last_start_seconds: float | None = None
        self.last_init_seconds: float | None = None

    def __repr__(self) -> str:
        return f"PostgresCluster(port={self.port}, data_dir={str(self.data_dir)!r})"

    # -- addresses ------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq URI for the app role over TCP: postgresql://odc:odc@127.0.0.1:<port>/odc"""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(self.database, safe='')}"
        )

    @property
    def sqlalchemy_url(self) -> str:
        """Same as :attr:`dsn` with the psycopg 3 driver: postgresql+psycopg://..."""
        return self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)

    def superuser_conninfo(self, dbname: str = "postgres") -> dict[str, Any]:
        """psycopg.connect(**kwargs) for the bootstrap superuser over the unix socket (trust)."""
        return {"host": str(self.socket_dir), "port": self.port, "user": SUPERUSER, "dbname": dbname}

    def _pick_socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred / f".s.PGSQL.{self.port}.lock")) <= _SOCKET_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"odcpg-{digest}"

    # -- another process ------------------------------------------------------------------------

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> PostgresCluster:
        """Handle on a cluster created earlier (maybe by another process) in ``data_dir``."""
        data_dir = Path(data_dir).resolve()
        st = json.loads((data_dir / "postgres.json").read_text())
        return cls(
            data_dir,
            st["port"],
            user=st["user"],
            password=st["password"],
            database=st["database"],
            superuser=st.get("superuser", True),
        )

    # -- state ----------------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def pid(self) -> int | None:
        """PID of the running postmaster (from postmaster.pid, checked against /proc), or None."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not pid_alive(pid):
            return None
        args = cmdline(pid)
        if not args or not any(a.endswith("postgres") for a in args[:1]) or str(self.pgdata) not in args:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    # -- helpers --------------------------------------------------------------------------------

    def _run_as(self, cmd: list[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        pw = self._pw
        kwargs: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        if os.geteuid() == 0 and pw.pw_uid != 0:
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        return subprocess.run(
            cmd,
            check=False,
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    @property
    def _pw(self) -> pwd.struct_passwd:
        if not hasattr(self, "_pw_cache"):
            self._pw_cache = _os_user()
        return self._pw_cache

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _ensure_traversable(self.data_dir, self._pw)
        self._chown(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)
        if not self.log_path.exists():
            self.log_path.touch()
        self._chown(self.log_path)
        if self.pgdata.exists() and os.geteuid() == 0 and self.pgdata.stat().st_uid != self._pw.pw_uid:
            for root, dirs, files in os.walk(self.pgdata):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, self._pw.pw_uid, self._pw.pw_gid, follow_symlinks=False)

    def _initdb(self) -> None:
        t0 = time.monotonic()
        base = [
            str(PG_BIN / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-instructions",
        ]
        proc = self._run_as([*base, "--locale=C.UTF-8"])
        if proc.returncode != 0:  # no C.UTF-8 locale on this machine: plain C
            shutil.rmtree(self.pgdata, ignore_errors=True)
            proc = self._run_as([*base, "--no-locale"])
        if proc.returncode != 0:
            raise PostgresSetupError(f"initdb failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# odc: local settings (rewritten on every start by deploy/local/postgres.py)\n")
            f.write("include_if_exists = 'odc.conf'\n")
        self.last_init_seconds = time.monotonic() - t0

    def settings(self) -> dict[str, str]:
        """Server settings written to PGDATA/odc.conf (fit for tests on a 2-core box)."""
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            # A normaliser batch locks each feature it may write (advisory, transaction-scoped), and for
            # same-place datasets the features near its new records too: 5,172 advisory locks held at once
            # during a 20,000-park run. The default (64 x 100 connections = 6,400 slots shared by all) ran
            # out at 100,000 parks ("out of shared memory"); 1,024 gives 102,400 (docs/scaling.md).
            "max_locks_per_transaction": "1024",
            "shared_buffers": "256MB",
            "effective_cache_size": "1GB",
            "work_mem": "8MB",
            "maintenance_work_mem": "128MB",
            "max_worker_processes": "4",
            "max_parallel_workers": "2",
            "max_parallel_workers_per_gather": "1",
            "max_parallel_maintenance_workers": "1",
            "random_page_cost": "1.1",
            "fsync": "on",
            "synchronous_commit": "on",
            "max_wal_size": "1GB",
            "jit": "off",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "logging_collector": "off",
            # Statement statistics for the benchmarks' writes per event (benchmarks/write_count.py; the view
            # needs CREATE EXTENSION pg_stat_statements in the database read). odc.conf is rewritten on every
            # start, so a cluster created before picks it up at its next restart. "all" counts the statements
            # run inside functions and triggers too.
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            **self.extra_settings,
        }

    def _write_conf(self) -> None:
        path = self.pgdata / "odc.conf"
        path.write_text(
            "# generated by deploy/local/postgres.py on every start; edits are overwritten\n"
            + "".join(f"{k} = {v}\n" for k, v in self.settings().items())
        )
        self._chown(path)

    def _write_state(self) -> None:
        self.state_path.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "user": self.user,
                    "password": self.password,
                    "database": self.database,
                    "superuser": self.superuser,
                    "dsn": self.dsn,
                    "socket_dir": str(self.socket_dir),
                },
                indent=2,
            )
            + "\n"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """initdb if needed, start (pg_ctl start -w), create role/database/postgis if missing, then
        prove readiness with ``SELECT postgis_full_version()`` over TCP as the app role.
        No-op apart from provisioning/readiness if already running."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        ensure_postgis_installed()
        self._prepare_dirs()
        if not self.is_running():
            if not self.is_initialized():
                self._initdb()
            self._write_conf()
            remaining = max(1, int(deadline - time.monotonic()))
            proc = self._run_as(
                [
                    str(PG_BIN / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(remaining),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log_path),
                ],
                timeout=remaining + 10,
            )
            if proc.returncode != 0:
                raise PostgresSetupError(
                    f"pg_ctl start failed (exit {proc.returncode}): {proc.stdout.strip()}\n"
                    f"log tail ({self.log_path}):\n{tail(self.log_path)}"
                )
        self._write_state()
        self._provision(deadline)
        self._await_ready(deadline)
        self.last_start_seconds = time.monotonic() - t0

    def _retry(self, what: str, fn: Any, deadline: float) -> Any:
        import psycopg

        last: BaseException | None = None
        while True:
            try:
                return fn()
            except psycopg.OperationalError as e:
                last = e
            if time.monotonic() >= deadline:
                raise PostgresSetupError(
                    f"{what} did not succeed before the deadline: {last}\nlog tail:\n{tail(self.log_path)}"
                )
            time.sleep(0.2)

    def _provision(self, deadline: float) -> None:
        import psycopg
        from psycopg import sql

        def create_role_db() -> None:
            with psycopg.connect(**self.superuser_conninfo(), autocommit=True, connect_timeout=5) as conn:
                attrs = sql.SQL("LOGIN SUPERUSER" if self.superuser else "LOGIN CREATEDB")
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [self.user]).fetchone()
                verb = sql.SQL("ALTER" if exists else "CREATE")
                conn.execute(
                    sql.SQL("{} ROLE {} {} PASSWORD {}").format(
                        verb, sql.Identifier(self.user), attrs, sql.Literal(self.password)
                    )
                )
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone():
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(self.database), sql.Identifier(self.user)
                        )
                    )

        def create_postgis() -> None:
            with psycopg.connect(**self.superuser_conninfo(self.database), autocommit=True, connect_timeout=5) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")

        self._retry("creating role/database", create_role_db, deadline)
        self._retry("CREATE EXTENSION postgis", create_postgis, deadline)

    def _await_ready(self, deadline: float) -> str:
        import psycopg

        def probe() -> str:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                row = conn.execute("SELECT postgis_full_version()").fetchone()
                assert row is not None
                return str(row[0])

        return str(self._retry("SELECT postgis_full_version()", probe, deadline))

    def postgis_version(self) -> str:
        """``SELECT postgis_full_version()`` as the app role over TCP (raises if not ready)."""
        return self._await_ready(time.monotonic())

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """pg_ctl stop -m smart|fast|immediate, waiting up to ``timeout`` s. Idempotent."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"mode must be smart, fast or immediate, not {mode!r}")
        if not self.is_running():
            return
        proc = self._run_as(
            [
                str(PG_BIN / "pg_ctl"),
                "stop",
                "-w",
                "-t",
                str(max(1, int(timeout))),
                "-m",
                mode,
                "-D",
                str(self.pgdata),
            ],
            timeout=timeout + 10,
        )
        if proc.returncode != 0 and self.is_running():
            raise PostgresSetupError(f"pg_ctl stop failed (exit {proc.returncode}): {proc.stdout.strip()}")

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (its whole process group: pg_ctl starts the
        postmaster with setsid), like a machine crash; the next start() runs crash recovery."""
        pid = self.pid()
        if pid is None:
            return
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return
        if pgid == pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not (not pid_alive(pid) and (pgid != pid or not group_alive(pgid))):
            if time.monotonic() >= deadline:
                raise PostgresSetupError(f"postmaster {pid} still alive 10 s after SIGKILL")
            time.sleep(0.05)
        # Dead, but possibly still a zombie until its (re)parent reaps it. The next postmaster would
        # see kill(pid, 0) succeed on the zombie and refuse to start ("lock file postmaster.pid
        # already exists"). Wait for the reap; if it does not come, drop the stale lock file.
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}"):
            if time.monotonic() >= deadline:
                with contextlib.suppress(FileNotFoundError):
                    (self.pgdata / "postmaster.pid").unlink()
                break
            time.sleep(0.05)


__all__ = [
    "PG_BIN",
    "POSTGIS_CONTROL",
    "PostgresCluster",
    "PostgresSetupError",
    "ensure_postgis_installed",
]
