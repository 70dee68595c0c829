"""``outdial simulator``: a local provider speaking Retell's HTTP API (server, request rules, calls,
scenarios, and a child-process handle for tests, the demo and the benchmark)."""
