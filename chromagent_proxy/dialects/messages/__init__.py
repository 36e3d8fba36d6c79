"""The Anthropic Messages client dialect (Claude Code, the Anthropic SDKs)."""

from .dialect import MessagesDialect

__all__ = ["MessagesDialect"]
