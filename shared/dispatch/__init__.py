"""One queued request in, at most one ACR run out: claims, retries, coalescing, budgets, replay."""
