"""Delivering messages: the worker process and everything it runs.

claim -> deliver -> record: `worker` claims due messages and hands them to
delivery coroutines that send through `channels`; `outcome` turns each
answer into a decision of `policy`; `recorder` writes results in batches;
`upkeep` reaps expired leases, vacuums the hot table and prunes history.
`runner` assembles one process, `supervisor` runs several.
"""
