"""moebox engine: GGUF access, model config, tokenizer, chat template, model math and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("moebox")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
