"""Test data helpers."""
