"""The error a cache that cannot be used raises, and how any error is told in one line wherever one is
shown to a person (the app, the command line, a job's status, a benchmark row): its message's first
line, never a traceback."""
from __future__ import annotations


class CacheError(ValueError):
    """A cache that cannot be read as it is; the message names the file and what is wrong."""


LONGEST = 500  # characters: a message that long is a dump, not a sentence


def first_line(error: BaseException) -> str:
    """The message's first line (a KeyError's key rather than its quoted repr), or the error's type
    when it has no message."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    message = str(message).strip()
    return message.splitlines()[0][:LONGEST] if message else type(error).__name__


def described(error: BaseException) -> str:
    """'Type: first line of the message', or the type alone when the message is empty."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message.splitlines()[0][:LONGEST]}" if message else type(error).__name__
