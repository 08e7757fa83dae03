"""Errors a user can hit. Each message says what went wrong and what to do."""


class MoeboxError(Exception):
    """Base of every error moebox raises on purpose."""


class GGUFError(MoeboxError):
    """A GGUF file, split set or directory that cannot be used as it is."""


class UnsupportedModelError(MoeboxError):
    """The file is a valid GGUF but describes a model moebox does not run."""


class TokenizerError(MoeboxError):
    """The GGUF's tokenizer metadata cannot be turned into a tokenizer."""


class ChatTemplateError(MoeboxError):
    """The chat template could not be rendered for the given messages."""


class NativeUnavailableError(MoeboxError):
    """The native kernels are missing or this CPU cannot run them."""


class InvalidOptionError(MoeboxError):
    """A setting given by the user (command line, API of `LLM`) that moebox cannot use."""


class PromptError(MoeboxError):
    """A prompt that cannot be run as given (the gateway answers 400)."""


class EmptyPromptError(PromptError):
    """The prompt has no tokens."""


class ContextLengthError(PromptError):
    """Prompt plus requested tokens do not fit the model's context."""


class InvalidTokenError(PromptError):
    """A prompt token id lies outside the model's vocabulary."""


class QueueFullError(MoeboxError):
    """Too many requests are already waiting for the model (the gateway answers 429)."""


class EngineStoppedError(MoeboxError):
    """The engine was shut down while a request was waiting or running."""


class GenerationError(MoeboxError):
    """The model failed while generating for a request (a bug: see the server log)."""
