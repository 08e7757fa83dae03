"""The `moebox` command line and terminal chat: the one place that knows both engine and gateway."""
