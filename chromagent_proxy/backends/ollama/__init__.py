"""Ollama native /api/chat backend (NDJSON streaming)."""

from chromagent_proxy.backends.ollama.provider import OllamaBackend

__all__ = ["OllamaBackend"]
