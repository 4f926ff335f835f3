"""Placeholder: filled in by the schedulers work."""
