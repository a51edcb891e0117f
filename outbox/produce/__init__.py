"""Producing messages: enqueue in the caller's transaction, and the rules a
message must follow (checked in Python first, then by ``outbox.enqueue()``)."""
