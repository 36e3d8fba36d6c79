"""The Anthropic Messages client dialect (Claude Code, the Anthropic SDKs)."""

from chromagent_proxy.dialects.messages.dialect import MessagesDialect

__all__ = ["MessagesDialect"]
