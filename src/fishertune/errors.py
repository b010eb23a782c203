"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class FisherTuneError(Exception):
    """A problem with the user's input (files, config, names), stated in one line."""
