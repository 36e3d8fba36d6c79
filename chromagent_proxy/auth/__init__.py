"""Credentials for upstreams that need more than a static key (Google OAuth for Vertex AI)."""
