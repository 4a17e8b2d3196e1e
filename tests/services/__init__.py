"""Throwaway real services (Debian packages) started by the test session on free loopback ports."""
