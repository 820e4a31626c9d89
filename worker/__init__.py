"""The RQ worker: runs searches (torch) and delivers webhooks. It never imports `service/` or FastAPI.

cli.py         `spotlight worker`
runner.py      the RQ worker, configured from Settings (fork per job, heartbeats, lost horses)
task.py        one job: load -> search -> describe -> write -> record how it ended
progress.py    progress and cancel flag through the job's meta
engine/        the search: a pure function of arrays and params (torch)
describe.py    what stands out in each region; bootstrap and permutation statistics
report.py      the self-contained HTML report of a job
webhook.py     signed callbacks, delivered from their own queue
"""
