"""What `pip install spotlight-service` brings: the client, its tables and the `spotlight` command.

It imports the contract only (numpy, httpx, rich, pydantic; pandas and pyarrow when a table is asked
for): no server code, no torch.

    api.py              SpotlightClient: the HTTP contract, one method per verb (re-exported here)
    tables.py           DataFrames in and out of the client (pandas, pyarrow, `datasets`)
    compare_client.py   the comparison of two runs as the client returns it
    gate.py             `--fail-if` expressions over regions, parsed, never eval'd
    cli.py              the `spotlight` command; hands up/api/openapi/worker to their owners (entry points)
    commands.py         its client commands: submit, status, regions, members, report, cancel
    compare_command.py  `spotlight compare OLD NEW`
"""

from spotlight.client.api import Job, JobFailedError, JobWaitTimeout, Region, Regions, SpotlightClient, SpotlightError

__all__ = ["Job", "JobFailedError", "JobWaitTimeout", "Region", "Regions", "SpotlightClient", "SpotlightError"]
