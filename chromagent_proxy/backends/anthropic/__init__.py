"""Anthropic Messages backends: ``anthropic`` (the Anthropic API) and ``vertex-anthropic``
(Claude on Vertex AI). One translator; only URL, auth and image handling differ."""

from chromagent_proxy.backends.anthropic.provider import AnthropicBackend, VertexAnthropicBackend

__all__ = ["AnthropicBackend", "VertexAnthropicBackend"]
