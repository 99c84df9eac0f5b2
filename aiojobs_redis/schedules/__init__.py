"""Schedules: values and tick arithmetic, their store in Redis, the keeper in workers."""
