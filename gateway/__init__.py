"""moebox gateway: the HTTP face of the engine (OpenAI- and Ollama-compatible APIs)."""
