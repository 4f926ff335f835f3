"""Placeholder: filled in by the monitors work."""
