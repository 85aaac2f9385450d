"""Adapters: settings, storage, HTTP, command line."""
