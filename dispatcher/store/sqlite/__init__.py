"""The store on an embedded SQLite file: the default, for one process."""

from dispatcher.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
