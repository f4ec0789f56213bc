"""Errors the storage layer raises to its callers (backend-neutral)."""


class StorageError(Exception):
    """Base class for storage failures."""


class Conflict(StorageError):
    """A unique value already exists (e.g. an API user name)."""


class SchemaBehind(StorageError):
    """The database schema is older than this program; run `mailrelay db migrate`."""
