"""The error every bad-input path raises: it names the file, column, row or key at fault."""


class DataError(ValueError):
    """Input data cannot be used; the message says where (file, column, row) and why."""
