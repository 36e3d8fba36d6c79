"""Test support: recorded-fixture loaders, fake upstream servers, a real gateway runner."""
