"""The durable mail queue and the queue manager."""
