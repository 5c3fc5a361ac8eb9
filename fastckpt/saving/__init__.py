"""Serialization of configs (and, later, whole models)."""
