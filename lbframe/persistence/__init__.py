"""Persistence (F6): methods that find a key in a request, stores that map keys to member names."""
