"""Gemini API and Vertex AI Gemini backends (one translator, two URL/auth shapes)."""

from chromagent_proxy.backends.gemini.provider import GeminiBackend, VertexGeminiBackend

__all__ = ["GeminiBackend", "VertexGeminiBackend"]
