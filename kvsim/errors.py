"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class KvsimError(Exception):
    """Bad input or an impossible configuration: the message is shown to the user as is."""
