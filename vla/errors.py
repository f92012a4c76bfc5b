"""The base of every error that means "the user asked for something we cannot do".

The `vla` command prints such an error's message (which names the file, key or value at fault)
in one line and exits with status 2; anything else is a bug and keeps its traceback. Each layer
keeps its own error class (ConfigError, CheckpointError, DatasetError, ...) deriving from this one,
so the command line need not import every layer to recognise them.
"""


class UserError(Exception):
    pass
