"""Modules generated from proto/."""
