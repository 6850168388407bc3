"""User-facing errors.

Every problem caused by the user's input (a missing or corrupt file, an unknown architecture, an
impossible size) is raised as a :class:`UserError` whose message is one sentence naming the problem
and what to do. The CLI prints that sentence on stderr and exits with status 2 — no traceback.
"""


class UserError(Exception):
    """Bad input: the message is shown to the user as is."""

    exit_code = 2


class CheckpointError(UserError):
    """A checkpoint file or folder that cannot be read or understood."""


class InternalError(RuntimeError):
    """The runtime found that what it does disagrees with the plan (a placement past the plan's budget,
    weights loaded in another dtype than planned): a bug in lowvram, not bad input. Tests catch these; the
    CLI turns one into a sentence asking for a report (exit status 1), never a traceback."""

    exit_code = 1
