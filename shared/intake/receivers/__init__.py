"""One module per event sender: verify, parse, normalise, route, enqueue."""
