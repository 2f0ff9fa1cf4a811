"""Where conversations live: a small :class:`SessionStore` interface, in memory or in SQLite.

>>> store = open_session_store("memory", ttl_s=3600, max_sessions=1000)
>>> store = open_session_store("sqlite:////var/lib/recagent/chat.db", ttl_s=3600)  # or a plain path
>>> store.put(ChatSession("abc", user_id="42"))
>>> store.lookup("abc")          # (ChatSession, "found"); ("unknown" / "expired", None) otherwise
>>> store.delete_user("42")      # 1: every conversation of that user is gone

A session idle longer than ``ttl_s`` expires: its data is deleted, and a small tombstone (id,
user id, time) stays for another ``ttl_s`` so the next request with that id can be told
"expired" instead of "unknown". A Redis or Postgres store implements the same six methods
(``lookup``, ``put``, ``delete``, ``delete_user``, ``count``, ``expire``).

The SQLite store is safe for several processes on one file (``recagent serve`` replicas on
one machine or a shared volume that supports file locks): WAL journal, a busy timeout, and
each write one short transaction. Two replicas answering the same conversation at the same
moment keep the later write (last writer wins).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .models import ChatSession

__all__ = ["SessionStore", "MemorySessionStore", "SQLiteSessionStore", "open_session_store", "Lookup"]

Lookup = Literal["found", "unknown", "expired"]


class SessionStore:
    """The interface. ``get``/``lookup`` return a session the caller may change; call
    :meth:`put` to keep the change (the memory store hands out the stored object itself)."""

    ttl_s: float

    def lookup(self, session_id: str) -> tuple[ChatSession | None, Lookup]:
        raise NotImplementedError

    def get(self, session_id: str) -> ChatSession | None:
        return self.lookup(session_id)[0]

    def put(self, session: ChatSession) -> None:
        raise NotImplementedError

    def delete(self, session_id: str) -> bool:
        """Remove one conversation (no tombstone); True if it existed."""
        raise NotImplementedError

    def delete_user(self, user_id: str) -> int:
        """Remove every conversation (and tombstone) of ``user_id``; the number of live ones removed."""
        raise NotImplementedError

    def count(self) -> int:
        """Live (unexpired) conversations."""
        raise NotImplementedError

    def expire(self, now: float | None = None) -> int:
        """Turn sessions idle past the TTL into tombstones, drop old tombstones; how many expired."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files or connections (a no-op in memory)."""


def _to_json(s: ChatSession) -> str:
    return json.dumps(dataclasses.asdict(s), separators=(",", ":"))


def _from_json(text: str) -> ChatSession:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(ChatSession)}
    return ChatSession(**{k: v for k, v in data.items() if k in known})


class MemorySessionStore(SessionStore):
    """Sessions in this process, least recently used dropped beyond ``max_sessions`` (they
    leave a tombstone too, so their id answers "expired"). Thread-safe."""

    def __init__(self, ttl_s: float = 6 * 3600, max_sessions: int = 1000):
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._live: OrderedDict[str, ChatSession] = OrderedDict()
        self._gone: OrderedDict[str, tuple[str | None, float]] = OrderedDict()  # id -> (user id, when)
        self._lock = threading.Lock()

    def lookup(self, session_id: str) -> tuple[ChatSession | None, Lookup]:
        now = time.time()
        with self._lock:
            s = self._live.get(session_id)
            if s is not None and now - s.updated > self.ttl_s:
                self._bury(session_id, now)
                s = None
            if s is not None:
                self._live.move_to_end(session_id)
                return s, "found"
            return None, "expired" if session_id in self._gone else "unknown"

    def put(self, session: ChatSession) -> None:
        with self._lock:
            self._live[session.id] = session
            self._live.move_to_end(session.id)
            self._gone.pop(session.id, None)
            while len(self._live) > self.max_sessions:
                self._bury(next(iter(self._live)), time.time())

    def _bury(self, session_id: str, now: float) -> None:
        s = self._live.pop(session_id)
        self._gone[session_id] = (s.user_id, now)
        while len(self._gone) > self.max_sessions:
            self._gone.popitem(last=False)

    def delete(self, session_id: str) -> bool:
        with self._lock:
            self._gone.pop(session_id, None)
            return self._live.pop(session_id, None) is not None

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            ids = [sid for sid, s in self._live.items() if s.user_id == user_id]
            for sid in ids:
                del self._live[sid]
            for sid in [sid for sid, (uid, _) in self._gone.items() if uid == user_id]:
                del self._gone[sid]
            return len(ids)

    def count(self) -> int:
        with self._lock:
            return len(self._live)

    def expire(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            old = [sid for sid, s in self._live.items() if now - s.updated > self.ttl_s]
            for sid in old:
                self._bury(sid, now)
            for sid in [sid for sid, (_, t) in self._gone.items() if now - t > self.ttl_s]:
                del self._gone[sid]
            return len(old)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    updated REAL NOT NULL,
    data TEXT              -- JSON of ChatSession; NULL = expired (tombstone)
);
CREATE INDEX IF NOT EXISTS chat_sessions_user ON chat_sessions (user_id);
CREATE INDEX IF NOT EXISTS chat_sessions_updated ON chat_sessions (updated);
"""


class SQLiteSessionStore(SessionStore):
    """Sessions in an SQLite file shared by every process that opens it (see the module doc).
    ``max_sessions`` caps live rows; the least recently updated go first, at :meth:`expire`."""

    def __init__(self, path: str | Path, ttl_s: float = 6 * 3600, max_sessions: int | None = None):
        self.path = Path(path).expanduser()
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"chat session store folder not found: {self.path.parent}",
                hint="pass session_store as a path in an existing folder, e.g. ./chat.db, or 'memory'",
                param="session_store",
            )
        self._lock = threading.Lock()
        try:
            # autocommit mode: each statement is its own short transaction unless BEGIN says otherwise
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ConfigError(
                f"cannot open the chat session store {self.path}: {e}",
                hint="pass a writable SQLite file path (it is created if missing) or session_store='memory'",
                param="session_store",
            ) from e

    def lookup(self, session_id: str) -> tuple[ChatSession | None, Lookup]:
        now = time.time()
        with self._lock:
            row = self._db.execute("SELECT data, updated FROM chat_sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return None, "unknown"
            data, updated = row
            if data is None:
                return None, "expired"
            if now - updated > self.ttl_s:
                self._db.execute("UPDATE chat_sessions SET data = NULL, updated = ? WHERE id = ?", (now, session_id))
                return None, "expired"
            return _from_json(data), "found"

    def put(self, session: ChatSession) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO chat_sessions (id, user_id, updated, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET user_id = excluded.user_id, updated = excluded.updated, data = excluded.data",
                (session.id, session.user_id, session.updated, _to_json(session)),
            )

    def delete(self, session_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM chat_sessions WHERE id = ?", (session_id,))
            return cur.rowcount > 0

    def delete_user(self, user_id: str) -> int:
        with self._lock:
            live = self._db.execute(
                "SELECT COUNT(*) FROM chat_sessions WHERE user_id = ? AND data IS NOT NULL", (user_id,)
            ).fetchone()[0]
            self._db.execute("DELETE FROM chat_sessions WHERE user_id = ?", (user_id,))
            return int(live)

    def count(self) -> int:
        cutoff = time.time() - self.ttl_s
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM chat_sessions WHERE data IS NOT NULL AND updated >= ?", (cutoff,)
            ).fetchone()
            return int(row[0])

    def expire(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE chat_sessions SET data = NULL, updated = ? WHERE data IS NOT NULL AND updated < ?",
                    (now, now - self.ttl_s),
                )
                n = cur.rowcount
                self._db.execute("DELETE FROM chat_sessions WHERE data IS NULL AND updated < ?", (now - self.ttl_s,))
                if self.max_sessions is not None:
                    over = self._db.execute(
                        "SELECT id FROM chat_sessions WHERE data IS NOT NULL ORDER BY updated DESC LIMIT -1 OFFSET ?",
                        (self.max_sessions,),
                    ).fetchall()
                    self._db.executemany(
                        "UPDATE chat_sessions SET data = NULL, updated = ? WHERE id = ?", [(now, r[0]) for r in over]
                    )
                    n += len(over)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return n

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_session_store(spec: str, *, ttl_s: float = 6 * 3600, max_sessions: int = 1000) -> SessionStore:
    """``"memory"``, a file path, or an SQLAlchemy-style URL: ``"sqlite:///rel/chat.db"``,
    ``"sqlite:////abs/chat.db"``."""
    s = spec.strip()
    if s == "memory":
        return MemorySessionStore(ttl_s=ttl_s, max_sessions=max_sessions)
    if s.startswith("sqlite:///"):
        return SQLiteSessionStore(s[len("sqlite:///") :], ttl_s=ttl_s, max_sessions=max_sessions)
    if s and "://" not in s:
        return SQLiteSessionStore(s, ttl_s=ttl_s, max_sessions=max_sessions)
    raise ConfigError(
        f"unknown chat session store {spec!r}",
        hint="pass 'memory', a file path such as ./chat.db, or sqlite:///path/to/chat.db",
        param="session_store",
    )
