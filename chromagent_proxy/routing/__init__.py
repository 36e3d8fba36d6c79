"""routing: see README Development."""
