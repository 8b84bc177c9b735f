"""The one error type users see: `lamina` prints it as a single line and exits non-zero."""


class ConfigError(ValueError):
    """A bad config value or data source. The message names the key or file and what was expected."""
