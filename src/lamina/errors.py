"""The one error type users see: `lamina` prints it as a single line and exits non-zero."""

import argparse
import errno


class ConfigError(ValueError):
    """A bad config value or data source. The message names the key or file and what was expected."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for lamina's own subcommands (proxy, study, ...): a usage mistake is a ConfigError,
    so it prints as one line like every lamina error, not argparse's usage block."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")


def write_failure(err: OSError) -> str:
    """Why a file could not be written, in the words a user acts on (a full disk above all)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "out of disk space"
    return err.strerror or str(err)
