"""Backend providers. Only ``registry`` knows which types exist."""
