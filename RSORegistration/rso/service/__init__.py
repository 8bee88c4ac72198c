"""The worker service: the line-delimited JSON protocol, the worker process that holds a session, its
client."""
