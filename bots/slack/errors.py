"""Errors the bot can hit. Each message says what went wrong and what to do."""


class BotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(BotError):
    """The environment (or .env file) lacks a setting the bot needs, or holds a bad value."""


class ModelServerError(BotError):
    """The OpenAI-compatible model server could not produce a completion.

    The message is shown to the Slack user as it is, so it says what to do.
    """


class ModelServerUnreachable(ModelServerError):
    """No connection could be made to the model server."""


class ModelServerTimeout(ModelServerError):
    """The model server accepted the request but went silent for too long."""


class ModelServerRejected(ModelServerError):
    """The model server answered with an HTTP error or a malformed stream."""
