"""Redundancy drivers (F8): whether this node owns the VIPs."""
