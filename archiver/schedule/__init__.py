"""The container's loop: cron ticks, heartbeat, health."""
