"""Chat bots that talk to the moebox HTTP API."""
