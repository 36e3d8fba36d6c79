"""ops: see README Development."""
