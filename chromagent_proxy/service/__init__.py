"""service: see README Development."""
