"""Composition: the runtime that wires adapters, the local host, the CLI and doctor."""
