"""The one exception type for user errors."""


class EdgekdError(Exception):
    """A user error: bad config, missing file, unusable input.

    The message names the offending field, file or layer, what was found and
    what would be valid. The CLI prints it on one line and exits 2.
    """
