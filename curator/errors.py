"""One exception hierarchy: the CLI prints `str(error)` on one line and exits non-zero."""


class CuratorError(Exception):
    """Base class for every error Curator reports to a user."""

    exit_code = 1


class UsageError(CuratorError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class CatalogError(CuratorError):
    """The catalog could not be opened, upgraded or written."""


class ModelNotFoundError(CuratorError):
    """A model's files are neither local, cached, nor downloadable."""


class QueryError(CuratorError):
    """A query could not be parsed; the message names the column."""

    def __init__(self, message: str, column: int | None = None):
        self.column = column
        super().__init__(f"{message} (at column {column})" if column is not None else message)


class ExportError(CuratorError):
    """An export could not be written."""


class Cancelled(CuratorError):
    """A long call was cancelled through its `CancelToken`; what finished is saved."""

    exit_code = 130
