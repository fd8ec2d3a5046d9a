"""Values and rules with no I/O: the BuildRequest, events, slipway.yaml and its grammars."""
