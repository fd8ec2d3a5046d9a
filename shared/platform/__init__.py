"""Adapters to the outside (storage, queues, HTTP, registries, identity, logs); no domain rules."""
