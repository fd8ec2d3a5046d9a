"""Events in: webhook receivers, routing, schedules and base-image polling onto the queue."""
