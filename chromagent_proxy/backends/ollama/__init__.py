"""Ollama native /api/chat backend (NDJSON streaming)."""

from .provider import OllamaBackend

__all__ = ["OllamaBackend"]
