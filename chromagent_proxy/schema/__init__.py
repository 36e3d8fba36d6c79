"""msgspec Structs for every wire format the gateway speaks."""
