"""Webhook intake: one pipeline (``pipeline``, ``checks``, ``answers``) and one module per sender.

A sender's module holds only its payload models and its spec (``pipeline.Sender``): how it
authenticates, which deliveries it acts on, how its body parses and becomes events.
"""
