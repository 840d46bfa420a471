"""Task records in an SQLite file, so results outlive clients (and the controller).

Pending tasks stay in memory (the hub touches them on every reply); a row is
written when a task is submitted and updated when it completes. Writes are
committed in batches by :meth:`flush`, which the hub calls after each burst of
messages, so one task costs no fsync of its own.
"""

import sqlite3
import struct

from .taskdb import PENDING, TaskDB, TaskRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    msg_id TEXT PRIMARY KEY, msg_type TEXT, session TEXT, engine_id INTEGER,
    submitted REAL, started REAL, completed REAL, status TEXT,
    stdout TEXT, stderr TEXT, request BLOB, result BLOB
)"""
SUMMARY = "msg_id, msg_type, session, engine_id, submitted, started, completed, status, stdout, stderr"


def pack_frames(frames):
    """Frames -> one blob: count, then (length, bytes) for each."""
    if frames is None:
        return None
    parts = [struct.pack("<I", len(frames))]
    for f in frames:
        data = f if isinstance(f, bytes) else bytes(f)
        parts += [struct.pack("<Q", len(data)), data]
    return b"".join(parts)


def unpack_frames(blob):
    if blob is None:
        return None
    view = memoryview(blob)
    (count,), offset, frames = struct.unpack_from("<I", view), 4, []
    for _ in range(count):
        (size,) = struct.unpack_from("<Q", view, offset)
        offset += 8
        frames.append(bytes(view[offset:offset + size]))
        offset += size
    return frames


class SQLiteDB(TaskDB):
    def __init__(self, path):
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level="DEFERRED")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(SCHEMA)
        self.conn.commit()
        self._pending = {}
        self._dirty = False

    def add(self, record):
        self._pending[record.msg_id] = record
        self.conn.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.msg_id, record.msg_type, record.session, record.engine_id, record.submitted,
             None, None, PENDING, "", "", pack_frames(record.request), None))
        self._dirty = True

    def get(self, msg_id):
        rec = self._pending.get(msg_id)
        if rec is not None:
            return rec
        row = self.conn.execute(f"SELECT {SUMMARY}, request, result FROM tasks WHERE msg_id=?",
                                (msg_id,)).fetchone()
        return _record(row, with_frames=True) if row else None

    def complete(self, msg_id, status, result, started, completed, stdout, stderr):
        rec = self._pending.pop(msg_id, None)
        if rec is None:
            return None
        rec.status, rec.result = status, result
        rec.started, rec.completed, rec.stdout, rec.stderr = started, completed, stdout, stderr
        self.conn.execute(
            "UPDATE tasks SET engine_id=?, started=?, completed=?, status=?, stdout=?, stderr=?, "
            "result=? WHERE msg_id=?",
            (rec.engine_id, started, completed, status, stdout, stderr, pack_frames(result), msg_id))
        self._dirty = True
        return rec

    def drop(self, msg_ids):
        ids = [m for m in msg_ids if m not in self._pending]
        self.conn.executemany("DELETE FROM tasks WHERE msg_id=?", [(m,) for m in ids])
        self._dirty = True

    def msg_ids(self):
        return [r[0] for r in self.conn.execute("SELECT msg_id FROM tasks ORDER BY rowid")]

    def records(self):
        """Every record without its frames (use get() for those), oldest first."""
        rows = self.conn.execute(f"SELECT {SUMMARY} FROM tasks ORDER BY rowid").fetchall()
        return [self._pending.get(row[0]) or _record(row) for row in rows]

    def flush(self):
        if self._dirty:
            self.conn.commit()
            self._dirty = False

    def close(self):
        self.flush()
        self.conn.close()


def _record(row, with_frames=False):
    rec = TaskRecord(row[0], row[1], row[2], row[3], row[4],
                     unpack_frames(row[10]) if with_frames else None)
    rec.started, rec.completed, rec.status, rec.stdout, rec.stderr = row[5:10]
    if with_frames:
        rec.result = unpack_frames(row[11])
    return rec
