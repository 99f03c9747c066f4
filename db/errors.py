"""Database errors as one line a person can act on, with passwords kept out.

SQLAlchemy's messages span several lines (the statement, its parameters, a
"Background on this error" link) and echo the URL, password included. What a user
needs is what happened and what to do; every write runs in one transaction, so a
failed statement has changed nothing.
"""

from __future__ import annotations

import re

from db import engine

# Greedy to the last `@`: a password may hold `@` itself.
_PASSWORD = re.compile(r"(://[^:/@\s]*:)(\S*)(@)")

# Missing database drivers: what to install for a URL that names no driver.
DRIVERS = {
    "postgresql": 'pip install "psycopg[binary]"',
    "postgres": 'pip install "psycopg[binary]"',
    "mysql": "pip install pymysql",
    "mariadb": "pip install pymysql",
    "mssql": "pip install pyodbc",
    "oracle": "pip install oracledb",
}


# Modules whose package has another name.
PACKAGES = {
    "psycopg": '"psycopg[binary]"',
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "cx_Oracle": "oracledb",
}


def redact(text: str) -> str:
    """`text` with the password of any URL in it replaced by `***`."""
    return _PASSWORD.sub(r"\1***\3", text)


def missing_driver_message(url: str, exc: ImportError) -> str:
    scheme = url.split("://", 1)[0].lower()
    module = exc.name or str(exc)
    install = DRIVERS.get(scheme, f"pip install {PACKAGES.get(module, module)}")
    return (
        f"the catalog {redact(url)} needs a database driver ({module} is not installed): {install}"
    )


def _first_line(text: str) -> str:
    text = text.split("\n(Background on this error")[0]
    return redact(text.strip().splitlines()[0] if text.strip() else text)


def database_error_message(exc: BaseException, where: str = "the catalog") -> str | None:
    """One line for a database error (SQLAlchemy's or sqlite3's); None for anything else."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        raw = str(exc.orig)
    elif isinstance(exc, SQLAlchemyError | sqlite3.Error):
        raw = str(exc)
    else:
        return None
    text = raw.lower()
    where = redact(where)
    unchanged = "nothing was changed"
    if "locked" in text:
        return (
            f"{where} is locked by another program (waited {engine.BUSY_TIMEOUT_MS / 1000:g} s): "
            f"close the program holding it, or wait for it to finish, and run again; {unchanged}"
        )
    if "disk is full" in text or "no space" in text:
        return f"the disk holding {where} is full: free some space and run again; {unchanged}"
    if "disk i/o error" in text:
        soft = _file_size_limit()
        if soft is not None:
            return (
                f"{where} could not be written: the file size limit ({soft} bytes, "
                f"`ulimit -f`) was reached; raise it and run again; {unchanged}"
            )
        return (
            f"{where} could not be written (disk I/O error: the disk may be full or failing); "
            f"check it and run again; {unchanged}"
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"{where} is read-only: make the file and its folder writable (or give --db a "
            f"writable copy) and run again; {unchanged}"
        )
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return (
            f"{where} is damaged ({_first_line(raw)}): restore a backup copy (NAME.bak-*) or "
            f"recover it with `sqlite3 OLD.db .recover | sqlite3 NEW.db`; {unchanged}"
        )
    if "unable to open" in text:
        return f"cannot open {where} ({_first_line(raw)}): check the path and its permissions"
    return f"database error on {where}: {_first_line(raw)}"


def _file_size_limit() -> int | None:
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft
