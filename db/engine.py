"""Database URLs, engines and migrations.

* :func:`resolve_url` turns ``None`` (then ``NGBENCH_DB_URL``, then ``./ngbench.db``), a file
  path or a SQLAlchemy URL into a URL.
* :func:`masked` renders a URL with every secret (the password, secret query parameters)
  replaced by ``***``: use it wherever a URL is stored, logged or shown; :func:`scrub` removes a
  URL's secrets from an error message.
* :func:`connect` creates the engine (SQLite: WAL journal, busy timeout, foreign keys), checks
  that the server answers, and migrates the schema to the newest revision.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from db.errors import DatabaseError, driver_reason, explain, sqlite_path

DEFAULT_FILE = "ngbench.db"
ENV_VAR = "NGBENCH_DB_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: SQLite busy timeout: concurrent writers wait this long for the lock.
SQLITE_BUSY_TIMEOUT_MS = 60_000


def resolve_url(db: str | os.PathLike[str] | None = None) -> str:
    if db is None:
        db = os.environ.get(ENV_VAR) or DEFAULT_FILE
    db = os.fspath(db)
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


#: Query parameters of a database URL whose values are secrets (libpq and driver spellings).
SECRET_QUERY_KEYS = frozenset({"password", "pass", "passwd", "pwd", "sslpassword", "secret", "token", "api_key"})
MASK = "***"


def _secret_key(key: str) -> bool:
    k = key.lower()
    return k in SECRET_QUERY_KEYS or "password" in k or "secret" in k or "token" in k


def url_secrets(url: str) -> list[str]:
    """The secret values a URL carries: the userinfo password and secret query parameters."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        found = [m.group(0)[len(m.group(1)) : -1] for m in _USERINFO.finditer(url)]
        return [s for s in found if s]
    found = [u.password] if u.password else []
    for key, value in u.query.items():
        if _secret_key(key):
            found += [v for v in ((value,) if isinstance(value, str) else value) if v]
    return [str(s) for s in found]


def masked(url: str) -> str:
    """``url`` with every secret replaced by ``***``: the userinfo password and the values of
    secret query parameters (``password``, ``sslpassword``, anything naming a password, secret or
    token). A URL that does not parse is not echoed at all."""
    try:
        u = make_url(url)
        _ = u.port
    except (ArgumentError, ValueError):
        return _pattern_masked(url)
    # A multi-valued secret collapses to one mask.
    query = {key: (MASK if _secret_key(key) else value) for key, value in u.query.items()}
    rendered = u.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", MASK)


_USERINFO = re.compile(r"(//[^/@:?#]*:)[^/@?#]*@")
_QUERY_SECRET = re.compile(r"([?&][^=&#]*(?:pass|pwd|secret|token|key)[^=&#]*=)[^&#]*", re.IGNORECASE)


def _pattern_masked(url: str) -> str:
    """Masking for a URL that does not parse: the same secrets found by pattern."""
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, _USERINFO.sub(lambda m: m.group(1) + MASK + "@", url))


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with every secret of ``url`` replaced by ``***``."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        u = make_url(url)
        _ = u.port  # a non-numeric port fails here, with one line, not deep in the driver
    except (ArgumentError, ValueError) as exc:
        reason = "not a URL" if isinstance(exc, ArgumentError) else f"bad port ({exc})"
        raise DatabaseError(f"invalid database URL {masked(url)}: {scrub(reason, url)}") from None
    kwargs: dict[str, object] = {"future": True}
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            parent = path.parent
            if not parent.exists():
                raise DatabaseError(f"cannot open database {masked(url)}: directory {parent} does not exist")
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
        if u.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(u, **kwargs)
    except (ArgumentError, SQLAlchemyError, ModuleNotFoundError) as exc:
        raise DatabaseError(f"cannot use database {masked(url)}: {scrub(str(exc), url)}") from None
    if u.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def known_revisions() -> set[str]:
    """Every revision of this ngbench's migrations."""
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}


def upgrade(engine: Engine, url: str) -> None:
    """Migrate to head. Safe with concurrent first users (advisory lock on PostgreSQL, retry on
    SQLite when another process created the tables first)."""
    from alembic import command

    rev = current_revision(engine)
    if rev == head_revision():
        return
    if rev is not None and rev not in known_revisions():
        raise DatabaseError(
            f"database {masked(url)} has schema revision {rev}, newer than this ngbench knows "
            f"(newest {head_revision()}): upgrade ngbench"
        )
    cfg = alembic_config(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(727061)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return
    reason = ""
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            return
        except (OperationalError, SQLAlchemyError) as exc:
            reason = f": {scrub(explain(driver_reason(exc), url), url)}"
            time.sleep(0.2 * (attempt + 1))
            if current_revision(engine) == head_revision():
                return
    raise DatabaseError(f"could not migrate the database {masked(url)} to revision {head_revision()}{reason}")


def connect(db: str | os.PathLike[str] | None = None, *, migrate: bool = True) -> tuple[Engine, str]:
    """An engine for ``db`` with the schema at head; raises :class:`DatabaseError` if unreachable."""
    url = resolve_url(db)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        engine.dispose()
        reason = explain(driver_reason(exc), url)
        raise DatabaseError(f"cannot reach database {masked(url)}: {scrub(reason, url)}") from None
    if migrate:
        upgrade(engine, url)
    return engine, url
