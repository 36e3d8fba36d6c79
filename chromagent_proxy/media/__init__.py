"""media: see README Development."""
