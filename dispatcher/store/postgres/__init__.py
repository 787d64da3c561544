"""The store on a PostgreSQL database: for several instances sharing one database."""

from dispatcher.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
