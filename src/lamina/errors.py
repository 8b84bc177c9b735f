"""The one error type users see: `lamina` prints it as a single line and exits non-zero."""

import errno


class ConfigError(ValueError):
    """A bad config value or data source. The message names the key or file and what was expected."""


def write_failure(err: OSError) -> str:
    """Why a file could not be written, in the words a user acts on (a full disk above all)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "out of disk space"
    return err.strerror or str(err)
