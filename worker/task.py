"""The RQ task: one spotlight search, from a stored dataset to stored results.

It reads like the job's life: load the dataset (memory-mapped from the store or its local cache) → search (the
engine, reporting progress and honouring cancellation) on a seeded half of the rows → test and describe
the regions (the verdict on the held-out half, spotlight/contract/verdict.py; the region record,
spotlight/contract/records.py) → write the results (each file atomically, ``regions.json`` last, so its
presence means "done") → say how it ended in the job's meta → queue the report.

The report (report.html, worker/report.py) is not part of the job's run: its plots cost several times
a small search, and nothing the API serves as results needs them. A finished job queues a follow-on
RQ job (`run_report`, on the reports queue the search workers serve: spotlight/server/jobqueue.py
`enqueue_report`) that renders it from the stored results; the job's meta says whether its report is
pending, ready or failed (spotlight/contract/jobstate.py), and the report route answers from that.

How a job ends is always written into its meta (``protocol.META_STATUS`` + ``META_ERROR``),
and the task *returns* on every outcome it understands — canceled, bad or missing data, an
engine error, a full store, a timeout — so RQ never retries those: another run would end the
same way, and the worker goes straight on to the next job. Only what the task cannot see (its
process killed, the machine gone) is left to RQ's retry and abandoned-job handling, configured
in spotlight/server/jobqueue.py.

One more way a run ends: between two regions, when another tenant's search waits for this worker
(`spotlight.server.jobqueue.claim_waiting_job`), the search yields. The task stores a checkpoint
(worker/checkpoint.py), marks the job queued with its regions done, and *returns* RQ's ``Retry``,
which puts the job at the back of its lane. Its next run, on any worker, goes on from the
checkpoint and finds the regions an uninterrupted run would have (docs/engine.md). The permutation
test (`n_permutations`) yields the same way between two shuffles: the checkpoint then holds every
region and the null scores so far, and the next run goes on with the next shuffle of the same stream,
so the p-values equal an uninterrupted run's. Describing the regions yields the same way between two
regions (the checkpoint then also holds the descriptions so far). A lost worker's retry goes on from
the last checkpoint too.

Every phase honours the job's time limit (raised as a BaseException by the worker's death penalty,
spotlight/server/jobqueue.py, so no phase's ``except Exception`` stops it) and its owner's cancel (read
between regions, between descriptions, and before the results).

The API process never imports this module: it names it by ``protocol.TASK_PATH``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from rq import Retry, get_current_job
from rq.job import Job

from spotlight.contract import classes, records, verdict
from spotlight.contract.contribution import Objective, order_by_contribution, reference_loss
from spotlight.contract.jobstate import (
    JobStatus,
    ReportStatus,
    ended_at,
    report_fields,
    started_at,
    status_of,
)
from spotlight.contract.members import effective_size, overlaps_with_earlier
from spotlight.contract.params import SearchParams
from spotlight.contract.protocol import (
    BASIS_FILE,
    META_SPEC,
    META_STARTED_AT,
    META_YIELDED,
    REGIONS_FILE,
    REPORT_FILE,
    WEIGHTS_FILE,
    ErrorCode,
    JobError,
    JobSpec,
    job_file,
    job_prefix,
    member_weights_file,
    members_by_contribution_file,
    members_file,
    parse_time,
    utcnow,
)
from spotlight.server.dataset_files import DatasetFiles, DatasetMissing
from spotlight.server.jobqueue import (
    TIME_LIMIT_EXCEPTIONS,
    YieldState,
    bring_forward,
    claim_waiting_job,
    enqueue_report,
    pass_the_turn,
    progress_with_regions_done,
    record_report_failed,
    yield_retry_max,
)
from spotlight.server.keys import Keys
from spotlight.server.settings import Settings, get_settings
from spotlight.server.store import ArtifactStore, StoreError, store_from_settings
from worker import checkpoint
from worker.checkpoint import Described
from worker.describe import NullSoFar, PermutationsYielded
from worker.engine.result import SearchCanceled, SearchResult, SearchResume, SearchYielded
from worker.progress import JobReporter

log = logging.getLogger("spotlight.worker.task")


class DescribeYielded(Exception):
    """Another tenant's search waits and the regions are being described: between two regions'
    descriptions (`described` so far) or two permutation-test shuffles (`null` so far)."""

    def __init__(self, described: Described, null: NullSoFar | None = None) -> None:
        super().__init__(f"yielded after describing {len(described.descriptions)} region(s)")
        self.described = described
        self.null = null


class JobFailed(Exception):
    """A step could not go on; carries the contract's error code for the job's meta."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(code=code, message=message)


@dataclass
class Inputs:
    """The arrays of one dataset, memory-mapped when the store is local."""

    files: DatasetFiles
    embeddings: np.ndarray
    losses: np.ndarray
    labels: np.ndarray | None
    predictions: np.ndarray | None
    sample_weights: np.ndarray | None


def run_job(spec: dict[str, Any]) -> dict[str, Any] | Retry:
    """RQ entry point (``protocol.TASK_PATH``): the spec is a JobSpec as JSON."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_job runs inside an RQ worker; call execute() directly elsewhere")
    return execute(JobSpec.model_validate(spec), job, get_settings())


def execute(spec: JobSpec, job: Job, settings: Settings, store: ArtifactStore | None = None) -> dict[str, Any] | Retry:
    """Run one search for `job` and record how it ended. Returns a small summary (RQ keeps it), or
    RQ's ``Retry`` when the search yielded its worker to another tenant's job."""
    job.get_meta(refresh=True)
    if status_of(job) == JobStatus.CANCELED:
        return _summary(spec, JobStatus.CANCELED)  # canceled while it waited in the queue
    run_started = time.monotonic()
    laps = Laps()
    earlier = YieldState.of(job.meta)
    reporter = JobReporter(job, Keys.of(settings), settings.progress_interval_s)
    p = spec.params
    reporter.started(
        p.n_spotlights,
        p.steps,
        resumed=progress_with_regions_done(p.n_spotlights, p.steps, earlier.regions) if earlier else None,
        since=earlier.first_started_at if earlier else None,
    )
    laps.mark("start")
    status = JobStatus.FINISHED
    error: JobError | None = None
    result: SearchResult | None = None
    regions: list[records.RegionRecord] | None = None
    info: dict[str, Any] | None = None
    try:
        if reporter.cancel_requested():
            raise SearchCanceled()
        store = store or _open_store(settings)
        inputs = load_inputs(store, spec.dataset_sha256)
        n_rows = int(inputs.losses.shape[0])
        too_few = verdict.too_few_rows(n_rows, p.spotlight_size)
        # Too few rows for a verdict: every row is searched, and the job says its regions are untested.
        parts = None if too_few else verdict.split(n_rows, p.seed)
        searched, search_params = searched_part(inputs, spec.params, parts) if parts else (inputs, spec.params)
        resume = checkpoint.load(store, spec, int(inputs.losses.shape[0]))
        null_so_far = checkpoint.load_null(store, spec, int(inputs.losses.shape[0])) if resume else None
        described = checkpoint.load_described(store, spec, int(inputs.losses.shape[0])) if resume else None
        yielder = _yielder(job, spec, settings)
        laps.mark("load")
        try:
            result = search(searched, search_params, reporter, resume=resume, should_yield=yielder)
        except SearchYielded as exc:
            retry = give_way(store, spec, job, reporter, exc.partial, earlier, run_started)
            if retry is not None:
                return retry
            # No checkpoint could be stored: go on here, from the regions in memory, without yielding.
            result = search(searched, search_params, reporter, resume=SearchResume.of(exc.partial))
        if earlier:
            result.elapsed_s += earlier.ran_s
        laps.mark("search")
        reporter.device(result.device)
        _record_device(job, settings, result.device)
        stop_if_canceled(reporter)
        result.losses = np.asarray(inputs.losses, dtype=np.float32)  # the engine saw the held-out ones masked
        members = pick_members(result, inputs, spec.params.objective, parts)
        laps.mark("members")

        def describe(**so_far: Any) -> list[records.RegionRecord]:
            return describe_regions(result, inputs, spec, members, reporter, parts=parts, laps=laps, **so_far)

        try:
            regions = describe(should_yield=yielder, null_so_far=null_so_far, described_so_far=described)
        except DescribeYielded as exc:
            retry = give_way(
                store, spec, job, reporter, result, earlier, run_started, null=exc.null, described=exc.described
            )
            if retry is not None:
                return retry
            # No checkpoint could be stored: go on here, from the descriptions in memory, without yielding.
            regions = describe(null_so_far=exc.null, described_so_far=exc.described)
        laps.mark("describe")
        stop_if_canceled(reporter)
        write_results(store, spec.job_id, result, regions, members, spec.params.objective, spec.params.level, too_few)
        checkpoint.clear(store, spec.job_id)
        info = report_info(spec, job, inputs, result, regions)
        laps.mark("results")
    except SearchCanceled:
        status, error = (
            JobStatus.CANCELED,
            JobError(code=ErrorCode.CANCELED, message="The job was canceled by its owner."),
        )
    except TIME_LIMIT_EXCEPTIONS:
        status, error = (
            JobStatus.FAILED,
            JobError(
                code=ErrorCode.JOB_TIMEOUT,
                message=f"The job ran past its limit of {(earlier.timeout_s if earlier else 0) or job.timeout} s; "
                "try fewer steps, restarts or spotlights.",
            ),
        )
    except JobFailed as exc:
        status, error = JobStatus.FAILED, exc.error
    if error is not None:
        log.warning("job %s %s: %s: %s", spec.job_id, status, error.code, error.message)
        if store is not None:
            with contextlib.suppress(Exception):
                store.delete_prefix(job_prefix(spec.job_id))  # no half-written result stays behind
    # Finished as soon as the results are stored; the report follows (`queue_report`), its status in the meta.
    reporter.ended(status, error, **(report_fields(ReportStatus.PENDING) if status == JobStatus.FINISHED else {}))
    laps.mark("ended")
    if status == JobStatus.FINISHED and info is not None:
        queue_report(job, settings, spec.job_id, info)
    record_stats(job, settings, status)
    hand_on_turn(job, settings, spec.tenant)
    finished = (
        [r.model_dump(mode="json") for r in regions] if regions is not None and status == JobStatus.FINISHED else None
    )
    notify(spec, settings, status, error, finished, job.connection)
    laps.mark("after")
    return {**_summary(spec, status, error, result), "phases_s": laps.seconds}


class Laps:
    """Seconds spent in each phase of one run, for the summary RQ keeps (``phases_s``): where a job's
    time goes, read by bench/speed.py's end-to-end breakdown without a profiler."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The time since the previous mark is `phase`'s (added up when a phase comes twice)."""
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 4)
        self._last = now


# ----- the steps -----
def stop_if_canceled(reporter: JobReporter) -> None:
    """Between two phases (search, describe, results): SearchCanceled once the owner asked
    to cancel, read now; a cancel during the last phases ends the job canceled, not finished."""
    if reporter.cancel_requested():
        raise SearchCanceled()


def _open_store(settings: Settings) -> ArtifactStore:
    try:
        return store_from_settings(settings)
    except (StoreError, OSError, ValueError) as exc:
        raise JobFailed(ErrorCode.STORE_ERROR, f"The artifact store cannot be opened: {exc}") from exc


def load_inputs(store: ArtifactStore, sha256: str) -> Inputs:
    """The dataset's arrays, memory-mapped: in place from a local store; from the bounded local
    cache (``cache_dir``, ``cache_max_bytes``) on an object store, or streamed into memory when an
    array does not fit it. A missing dataset and an unreadable store are told apart."""
    files = DatasetFiles(store, sha256)
    try:
        return Inputs(
            files=files,
            embeddings=files.embeddings(),
            losses=files.losses(),
            labels=files.labels(),
            predictions=files.predictions(),
            sample_weights=files.sample_weights(),
        )
    except DatasetMissing as exc:
        raise JobFailed(
            ErrorCode.DATASET_GONE, f"The job's dataset is no longer stored ({exc}); upload it again."
        ) from exc
    except (StoreError, OSError, ValueError, KeyError) as exc:
        raise JobFailed(ErrorCode.STORE_ERROR, f"The dataset could not be read from the store: {exc}") from exc


def _yielder(job: Job, spec: JobSpec, settings: Settings) -> Callable[[], bool] | None:
    """The engine's ``should_yield``: whether another tenant's search waits for this worker now.

    A job of another tenant that has not started yet is let in at the next region boundary; one
    that already had a turn only once this run has lasted ``yield_slice_s`` (spotlight/server/jobqueue.py
    says why).
    """
    if not settings.yield_to_other_tenants:
        return None
    retry_max = yield_retry_max(spec.params.n_spotlights, spec.params.n_permutations)
    run_started = time.monotonic()

    def should_yield() -> bool:
        if (job.number_of_retries or 0) >= retry_max:
            return False  # RQ would fail the job rather than queue it again (see yield_retry_max)
        slice_used = time.monotonic() - run_started >= settings.yield_slice_s
        try:
            waiting = claim_waiting_job(job.connection, settings, spec.tenant, job.id, fresh_only=not slice_used)
            if waiting is not None:
                bring_forward(job.connection, settings, waiting)  # it runs next, not behind our other jobs
            return waiting is not None
        except redis.RedisError:
            return False  # Redis unreachable: keep the worker, the search goes on

    return should_yield


def give_way(
    store: ArtifactStore,
    spec: JobSpec,
    job: Job,
    reporter: JobReporter,
    partial: SearchResult,
    earlier: YieldState | None,
    run_started: float,
    null: NullSoFar | None = None,
    described: Described | None = None,
) -> Retry | None:
    """Checkpoint the regions so far (with `null`, the permutation test so far; with `described`, the
    regions' descriptions so far) and hand the job back to RQ (queued again, at the back of its lane).

    The job timeout covers all runs together: the next run gets what this one left (RQ persists the
    job's ``timeout`` when it queues the job again). None — go on here — when the checkpoint cannot
    be stored or less than a second of the limit is left.
    """
    ran_s = (earlier.ran_s if earlier else 0.0) + (time.monotonic() - run_started)
    limit = (earlier.timeout_s if earlier else 0) or int(job.timeout or 0)
    if limit > 0 and limit - ran_s < 1:
        return None
    try:
        checkpoint.save(store, spec, partial, null, described)
    except (StoreError, OSError, ValueError) as exc:  # ValueError: a score JSON cannot hold (NaN)
        log.warning("job %s: checkpoint not stored (%s); it keeps its worker", spec.job_id, exc)
        return None
    state = YieldState(
        regions=len(partial.regions),
        yields=(earlier.yields if earlier else 0) + 1,
        ran_s=ran_s,
        timeout_s=limit,
        first_started_at=earlier.first_started_at if earlier else job.meta.get(META_STARTED_AT),
    )
    if limit > 0:
        job.timeout = math.ceil(limit - ran_s)
    p = spec.params
    reporter.yielded(
        progress_with_regions_done(p.n_spotlights, p.steps, state.regions), **{META_YIELDED: state.model_dump()}
    )
    log.info(
        "job %s yields its worker after %d of %d regions and %d of %d permutations (another tenant's job waits)",
        spec.job_id,
        state.regions,
        p.n_spotlights,
        len(null.scores) if null else 0,
        p.n_permutations,
    )
    return Retry(max=yield_retry_max(p.n_spotlights, p.n_permutations))


def search(
    inputs: Inputs,
    params: SearchParams,
    reporter: JobReporter,
    *,
    resume: SearchResume | None = None,
    should_yield: Callable[[], bool] | None = None,
) -> SearchResult:
    """Call the engine (imported here, in the work-horse, where choosing a CUDA device is safe)."""
    from worker.engine import search as engine_search

    try:
        return engine_search(
            inputs.embeddings,
            inputs.losses,
            params,
            labels=inputs.labels,
            predictions=inputs.predictions,
            sample_weights=inputs.sample_weights,
            progress=reporter.progress,
            should_stop=reporter.should_stop,
            should_yield=should_yield,
            resume=resume,
            weights_out=scratch_weights(int(inputs.losses.shape[0]), params.n_spotlights),
        )
    except (SearchCanceled, SearchYielded):
        raise
    except Exception as exc:  # the engine's errors become the job's, the worker lives on
        log.exception("search failed")
        raise JobFailed(ErrorCode.SEARCH_FAILED, f"The search failed: {type(exc).__name__}: {exc}") from exc


def scratch_weights(n: int, k: int) -> np.ndarray:
    """Where the engine writes the n x k kernel values: a memory-mapped temporary file (under TMPDIR,
    unlinked at once, so it is gone when the horse lets go of it), not the horse's own memory.

    Why: n x k float32 grows with rows times regions (4 M rows x 50 regions: 800 MB); file-backed
    pages are written back and dropped by the kernel under pressure instead of counting against the
    horse, and write_results copies them to the store from the file.
    """
    scratch = tempfile.TemporaryFile(prefix="spotlight-weights-")
    try:
        return np.memmap(scratch, dtype=np.float32, mode="w+", shape=(n, k))
    finally:
        scratch.close()  # the mapping keeps the (unlinked) file alive


def searched_part(inputs: Inputs, params: SearchParams, parts: verdict.Split) -> tuple[Inputs, SearchParams]:
    """What the engine searches: every row, the held-out ones with sample weight 0 and a loss it cannot
    learn from (spotlight/contract/verdict.py), and a count spotlight_size scaled to the searched share."""
    losses, weights = verdict.search_inputs(inputs.losses, inputs.sample_weights, parts)
    searched = dataclasses.replace(inputs, losses=losses, sample_weights=weights)
    return searched, params.model_copy(update={"spotlight_size": verdict.search_size(params.spotlight_size)})


@dataclass
class RegionMembers:
    """One region's member set (spotlight/contract/members.py) in the two orders the API pages and the report shows.

    Computed once here; write_results stores both orders and the report reads its top rows from
    `by_contribution`, so nothing ranks members a second time. The set covers every row: the searched
    members (the member rule on the rows searched) and the held-out rows at or above the threshold it
    drew (`min_weight`), which are also kept apart as `held_out`, the rows the verdict tests.
    """

    by_weight: np.ndarray  # int64 rows, highest kernel weight first, ties by row
    by_contribution: np.ndarray  # the same rows, highest weight x (loss - the floor) first
    held_out: np.ndarray  # int64: the members among the held-out rows
    min_weight: float | None  # member_min_weight, drawn on the searched rows


def pick_members(
    result: SearchResult, inputs: Inputs, objective: Objective = "max_loss", parts: verdict.Split | None = None
) -> list[RegionMembers]:
    """Every region's members, by the one rule of spotlight/contract/members.py, in both orders.

    `parts`: the verdict's split (None: every row was searched)."""
    reference = reference_loss(result.losses, objective)
    picked = []
    for k, region in enumerate(result.regions):
        column = np.asarray(result.weights[:, k])
        rows = verdict.region_rows(column, region.kernel, parts, inputs.sample_weights)
        by_contribution = order_by_contribution(rows.all, column, result.losses, objective, reference)
        picked.append(
            RegionMembers(
                by_weight=rows.all, by_contribution=by_contribution, held_out=rows.held_out, min_weight=rows.min_weight
            )
        )
    return picked


def describe_regions(
    result: SearchResult,
    inputs: Inputs,
    spec: JobSpec,
    members: list[RegionMembers],
    reporter: JobReporter | None = None,
    *,
    should_yield: Callable[[], bool] | None = None,
    null_so_far: NullSoFar | None = None,
    described_so_far: Described | None = None,
    parts: verdict.Split | None = None,
    laps: Laps | None = None,
) -> list[records.RegionRecord]:
    """The regions as regions.json stores them (spotlight/contract/records.py), each with its verdict.

    Per region: the search's own figures (`weighted_loss`, `weighted_lift`, in-sample), the member set
    over every row (`n_members`, `effective_size`, `overlap` with earlier regions, `member_min_weight`),
    where it is (`member_mean`, `medoid`), the verdict of spotlight/contract/verdict.py on the held-out rows
    (`significant` and the Holm-adjusted `p_value` from its kernel weights over every held-out row;
    the honest `mean_loss`, `lift`, `error_rate` with intervals of its held-out members),
    and `description` (worker/describe.py: who the members are; its loss figures in-sample; with texts,
    its terms' lift measured on the held-out rows when the job has the verdict's split).
    `permutation_p_value` when `params.n_permutations` > 0 (that test goes on from `null_so_far`). A
    region found with label evidence gets the dataset's class names in its `evidence`.

    Every phase honours cancel and the job's time limit: between two regions' descriptions (and two
    shuffles) a cancel raises SearchCanceled and, when `should_yield()` says so, DescribeYielded
    carries what is done so far (`described_so_far` goes on from it). A description that fails is
    no reason to lose the regions, but it is said: that region's `description` is null and its
    `description_error` says why.
    """
    p = spec.params
    sets = [m.by_weight for m in members]
    overlaps = overlaps_with_earlier(sets)
    class_names = inputs.files.manifest().get(classes.MANIFEST_KEY)
    losses = np.asarray(inputs.losses)
    wrong = None
    if inputs.labels is not None and inputs.predictions is not None:
        wrong = np.asarray(inputs.labels).ravel() != np.asarray(inputs.predictions).ravel()
    held = parts.held_out if parts is not None else np.empty(0, dtype=np.int64)
    tested = parts is not None
    figures = [
        verdict.holdout_test(
            losses,
            m.held_out,
            held,
            result.weights[:, k],
            objective=p.objective,
            sample_weights=inputs.sample_weights,
            wrong=wrong,
            seed=p.seed + k,
        )
        for k, m in enumerate(members)
    ]
    adjusted = verdict.holm([f.p_value for f in figures])
    if laps is not None:
        laps.mark("verdict")
    described = describe_each(sets, result, inputs, spec, reporter, should_yield, described_so_far, parts)
    descriptions = [_typed_description(k, d, described.errors) for k, d in enumerate(described.descriptions)]
    try:
        permutation = _permutation_p_values(result, inputs, spec, reporter, should_yield, null_so_far, parts)
    except PermutationsYielded as exc:
        raise DescribeYielded(described, exc.done) from exc
    regions = []
    for k, region in enumerate(result.regions):
        raw = region.to_dict()
        evidence = raw.get("evidence")
        if class_names and evidence is not None:  # so that other data's labels are matched by name
            evidence = {**evidence, "class_names": [str(c) for c in class_names]}
        fig = figures[k]
        mean, medoid = _place(inputs.embeddings, sets[k])
        regions.append(
            records.RegionRecord(
                index=region.index,
                significant=adjusted[k] is not None and float(adjusted[k] or 1.0) <= p.level,
                p_value=adjusted[k],
                mean_loss=fig.mean_loss,
                mean_loss_ci=fig.mean_loss_ci,
                lift=fig.lift,
                lift_ci=fig.lift_ci,
                error_rate=fig.error_rate,
                n_holdout_members=fig.n_members,
                verdict=None
                if not tested
                else records.Verdict(
                    method=verdict.METHOD,
                    level=p.level,
                    n_tested=sum(a is not None for a in adjusted),
                    p_value_unadjusted=fig.p_value,
                    n_holdout_rows=int(held.size),
                    holdout_mean_loss=fig.holdout_mean_loss,
                    n_draws=fig.n_draws,
                ),
                weighted_loss=region.weighted_loss,
                weighted_lift=region.lift,
                dataset_mean_loss=region.mean_loss,
                size_requested=region.size_requested,
                total_weight=region.total_weight,
                feasible=region.feasible,
                steps_run=region.steps_run,
                converged=region.converged,
                permutation_p_value=permutation[k] if permutation else None,
                n_permutations=p.n_permutations if permutation else None,
                n_members=int(sets[k].size),
                effective_size=effective_size(result.weights[:, k], inputs.sample_weights),
                overlap=[records.RegionOverlap.model_validate(o) for o in overlaps[k]],
                member_min_weight=members[k].min_weight,
                member_mean=mean,
                medoid=medoid,
                center=raw["center"],
                precision=raw["precision"],
                kernel=raw["kernel"],
                shape=raw["shape"],
                objective=raw["objective"],
                radius_u=raw.get("radius_u"),
                precision_space=raw.get("precision_space", "embedding"),
                pca_components=raw.get("pca_components"),
                evidence=None if evidence is None else records.EvidenceTerm.model_validate(evidence),
                description=descriptions[k],
                description_error=described.errors.get(k),
            )
        )
    return regions


def _place(embeddings: np.ndarray, rows: np.ndarray) -> tuple[list[float] | None, int | None]:
    """Where a region is: its members' mean embedding, and the member row nearest it (a row to open)."""
    if rows.size == 0:
        return None, None
    ordered = np.sort(rows)
    x = np.asarray(embeddings[ordered], dtype=np.float64)
    mean = x.mean(axis=0)
    medoid = int(ordered[int(np.argmin(((x - mean) ** 2).sum(axis=1)))])
    return [float(v) for v in mean], medoid


def _typed_description(k: int, raw: dict[str, Any] | None, errors: dict[int, str]) -> records.RegionDescription | None:
    """Region k's description as the record's type; one the record cannot hold is that region's
    `description_error` (recorded in `errors`), never a failed job nor a silently dropped field."""
    if raw is None:
        return None
    try:
        return records.RegionDescription.from_describe(raw)
    except ValueError as exc:  # pydantic's ValidationError is one
        log.exception("region %d's description does not fit the region record", k)
        errors[k] = f"This region could not be described: {type(exc).__name__}: {exc}"
        return None


def describe_each(
    sets: list[np.ndarray],
    result: SearchResult,
    inputs: Inputs,
    spec: JobSpec,
    reporter: JobReporter | None,
    should_yield: Callable[[], bool] | None,
    so_far: Described | None,
    parts: verdict.Split | None = None,
) -> Described:
    """The regions' descriptions, one region at a time, going on from `so_far`.

    Before each region: SearchCanceled when the owner canceled; DescribeYielded (with what is done)
    when another tenant's search waits (`should_yield`). A region whose description fails gets None
    and its reason in `errors`, and the next region is tried. The job's time limit (`JobTimeLimitReached`, a
    BaseException) passes through every handler here.
    """
    from worker import describe

    done = Described(list(so_far.descriptions), dict(so_far.errors)) if so_far else Described()
    names = inputs.files.manifest().get(classes.MANIFEST_KEY)
    started_at = len(done.descriptions)
    heldout = None
    if parts is not None:  # the verdict's held-out rows: a text term's lift is measured on them
        heldout = np.zeros(int(result.losses.shape[0]), dtype=bool)
        heldout[parts.held_out] = True

    def from_region(first: int) -> Iterator[tuple[int, dict[str, Any]]]:
        return describe.iter_job_descriptions(
            sets,
            result.losses,
            labels=inputs.labels,
            predictions=inputs.predictions,
            sample_weights=inputs.sample_weights,
            read_metadata=inputs.files.metadata,
            seed=spec.params.seed,
            first=first,
            # With the verdict's split a term's lift is measured on the held-out rows; a job searched on
            # every row (too few rows for a verdict) measures it on the rows outside the region, and the
            # description says which (text_terms_lift_on).
            read_texts=inputs.files.texts if inputs.files.has("texts") else None,
            heldout=heldout,
        )

    descriptions = from_region(started_at)
    while len(done.descriptions) < len(sets):
        k = len(done.descriptions)
        if reporter is not None and reporter.should_stop():
            raise SearchCanceled()
        if k > started_at and should_yield is not None and should_yield():
            raise DescribeYielded(done)
        try:
            _, description = next(descriptions)
            done.descriptions.append(classes.name_description(description, names))
        except Exception as exc:  # noqa: BLE001 - the regions are the result; a failed description says so
            log.exception("describing region %d of %s failed", k, spec.job_id)
            done.descriptions.append(None)
            done.errors[k] = f"This region could not be described: {type(exc).__name__}: {exc}"
            descriptions = from_region(k + 1)  # a generator that raised is spent: go on after region k
    return done


def _permutation_p_values(
    result: SearchResult,
    inputs: Inputs,
    spec: JobSpec,
    reporter: JobReporter | None,
    should_yield: Callable[[], bool] | None,
    null_so_far: NullSoFar | None,
    parts: verdict.Split | None,
) -> list[float] | None:
    """The optional rerun-the-search test (`n_permutations` > 0), on the rows the search used: each
    rerun shuffles the searched rows' losses among themselves."""
    if spec.params.n_permutations <= 0:
        return None
    from worker import describe
    from worker.engine import search as engine_search

    searched_rows = parts.searched if parts is not None else np.arange(result.losses.shape[0])
    if parts is not None:
        searched, params = searched_part(inputs, spec.params, parts)
    else:
        searched, params = inputs, spec.params
    base = np.array(searched.losses, dtype=np.float32, copy=True)
    best = describe.rerun_best(
        engine_search,
        searched.embeddings,
        params,
        labels=searched.labels,
        predictions=searched.predictions,
        sample_weights=searched.sample_weights,
        should_stop=reporter.should_stop if reporter else None,
    )

    def best_on(shuffled: np.ndarray) -> float:
        losses = base.copy()
        losses[searched_rows] = shuffled
        return best(losses)

    try:
        return describe.significance(
            best_on,
            base[searched_rows],
            [r.to_dict() for r in result.regions],
            spec.params.n_permutations,
            spec.params.seed,
            resume=null_so_far,
            should_yield=should_yield,
        )
    except (SearchCanceled, PermutationsYielded):
        raise
    except Exception as exc:
        log.exception("permutation test failed")
        raise JobFailed(ErrorCode.SEARCH_FAILED, f"The permutation test failed: {type(exc).__name__}: {exc}") from exc


def report_info(
    spec: JobSpec, job: Job, inputs: Inputs, result: SearchResult, regions: list[records.RegionRecord]
) -> dict[str, Any]:
    """The report's header: what only the search that ended knows (its times, device, verdict), as JSON
    for the follow-on report job."""
    manifest = inputs.files.manifest()
    meta = job.get_meta(refresh=False)
    untested = verdict.too_few_rows(int(inputs.losses.shape[0]), spec.params.spotlight_size)
    return {
        "id": spec.job_id,
        "dataset": spec.dataset_id,
        "n": manifest.get("n"),
        "dim": manifest.get("dim"),
        "params": spec.params.model_dump(mode="json"),
        "created_at": spec.created_at.isoformat(),
        "started_at": meta.get(META_STARTED_AT),
        "ended_at": utcnow().isoformat(),
        "device": result.device,
        "elapsed_s": round(result.elapsed_s, 3),
        "verdict": records.job_summary(regions, spec.params.level, spec.params.objective, untested),
    }


def queue_report(job: Job, settings: Settings, job_id: str, info: dict[str, Any]) -> None:
    """Queue the follow-on job that renders the report (spotlight/server/jobqueue.py `enqueue_report`); when it
    cannot be queued, the job's report is failed at once, never pending for good."""
    try:
        enqueue_report(job.connection, settings, job_id, info)
    except Exception as exc:  # noqa: BLE001 - the job has finished; its report says why it will not come
        log.exception("the report of %s could not be queued", job_id)
        with contextlib.suppress(Exception):
            record_report_failed(job.connection, job_id, f"its rendering could not be queued: {exc}")


def run_report(job_id: str, info: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point (``protocol.REPORT_TASK_PATH``): render finished job `job_id`'s report."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_report runs inside an RQ worker; call render_report() directly elsewhere")
    return render_report(job_id, info, job.connection, get_settings())


def render_report(
    job_id: str, info: dict[str, Any], connection: redis.Redis, settings: Settings, store: ArtifactStore | None = None
) -> dict[str, Any]:
    """Write finished job `job_id`'s report.html from its stored results and dataset, then record the
    report ready (or failed, and why) in the job's meta. Returns a small summary (RQ keeps it).

    The report never fails for its data (degenerate regions get a note where a plot would be); should
    rendering fail anyway, a plain page with the regions' numbers and the reason is written instead.
    Results that are gone (the job expired or its dataset was deleted) fail the report with that reason.
    """
    from worker.report import fallback_report, job_report

    job = Job.fetch(job_id, connection=connection)
    spec = JobSpec.model_validate(job.meta[META_SPEC])
    try:
        store = store or _open_store(settings)
        inputs = load_inputs(store, spec.dataset_sha256)
        try:
            document = store.read_json(job_file(job_id, REGIONS_FILE))
            weights = store.load_npy(job_file(job_id, WEIGHTS_FILE))
            dumped = list(document["regions"])
            by_weight = [store.load_npy(job_file(job_id, members_file(k))) for k in range(len(dumped))]
            by_contribution = [
                store.load_npy(job_file(job_id, members_by_contribution_file(k))) for k in range(len(dumped))
            ]
        except FileNotFoundError as exc:
            raise JobFailed(ErrorCode.NOT_FOUND, f"the job's results are no longer stored ({exc})") from exc
        except (StoreError, OSError, ValueError, KeyError) as exc:
            raise JobFailed(ErrorCode.STORE_ERROR, f"the job's results could not be read: {exc}") from exc
        names = inputs.files.manifest().get(classes.MANIFEST_KEY)  # labels and predictions are shown by class name
        try:
            html = job_report(
                info,
                dumped,
                [r.get("description") for r in dumped],
                inputs.embeddings,
                np.asarray(inputs.losses, dtype=np.float32),
                weights,
                by_weight,
                by_contribution,
                labels=classes.names_of(inputs.labels, names),
                predictions=classes.names_of(inputs.predictions, names),
                read_ids=inputs.files.ids,
                read_metadata=inputs.files.metadata,
                seed=spec.params.seed,
                objective=spec.params.objective,
            )
        except Exception as exc:  # noqa: BLE001 - a finished job gets a report: the numbers, and why no more
            log.exception("rendering the report of %s failed", job_id)
            html = fallback_report(info, dumped, f"{type(exc).__name__}: {exc}")
        try:
            store.write_bytes(job_file(job_id, REPORT_FILE), html.encode("utf-8"))
            if not store.exists(job_file(job_id, REGIONS_FILE)):  # the results were deleted while it rendered
                store.delete_prefix(job_prefix(job_id))
                raise JobFailed(ErrorCode.NOT_FOUND, "the job's results were deleted while its report was rendered")
        except (StoreError, OSError) as exc:
            raise JobFailed(ErrorCode.STORE_ERROR, f"the report could not be written to the store: {exc}") from exc
    except JobFailed as exc:
        log.warning("report of %s failed: %s", job_id, exc.error.message)
        record_report_failed(connection, job_id, exc.error.message)
        return {"job_id": job_id, "report": ReportStatus.FAILED.value, "error": exc.error.message}
    meta = job.get_meta(refresh=True)
    meta.update(report_fields(ReportStatus.READY))
    job.save_meta()
    return {"job_id": job_id, "report": ReportStatus.READY.value, "error": None}


def hand_on_turn(job: Job, settings: Settings, tenant: str) -> None:
    """This job's turn is over: another tenant's search waiting behind this tenant's queued jobs goes
    first (`spotlight.server.jobqueue.pass_the_turn`: fair share across queued jobs, not only the running one)."""
    if not settings.yield_to_other_tenants:
        return
    try:
        pass_the_turn(job.connection, settings, tenant)
    except redis.RedisError:
        log.warning("job %s: could not hand the turn on", job.id, exc_info=True)


def record_stats(job: Job, settings: Settings, status: JobStatus) -> None:
    """Duration and queue wait for /metrics (kept in Redis, so every API process reports the same)."""
    from spotlight.server import jobstats

    started = started_at(job)
    ended = ended_at(job, status)
    # RQ stamps enqueued_at again each time a yielded job goes back in its queue; the wait that
    # counts is the one before its first run.
    enqueued = parse_time(job.enqueued_at)
    if YieldState.of(job.meta) is not None:
        created = parse_time((job.meta.get(META_SPEC) or {}).get("created_at"))
        enqueued = min(created, enqueued) if created and enqueued else created or enqueued
    try:
        jobstats.record_job_end(
            job.connection,
            Keys.of(settings),
            status,
            (ended - started).total_seconds() if started and ended else None,
            (started - enqueued).total_seconds() if started and enqueued else None,
        )
    except Exception:  # noqa: BLE001 - metrics never fail a job
        log.warning("could not record the stats of %s", job.id, exc_info=True)


def _record_device(job: Job, settings: Settings, device: str) -> None:
    """Which device this worker computes on, for /metrics' worker table."""
    from spotlight.server import jobstats

    if job.worker_name:
        with contextlib.suppress(Exception):
            jobstats.record_worker_device(job.connection, Keys.of(settings), job.worker_name, device)


def notify(
    spec: JobSpec,
    settings: Settings,
    status: JobStatus,
    error: JobError | None,
    regions: list[dict[str, Any]] | None,
    connection: Any,
) -> None:
    """Queue the signed summary for the job's callback_url (worker/webhook.py); never fails the job.

    Delivery runs as its own RQ job on the callbacks queue (spotlight/server/jobqueue.py), so a receiver that
    is down never holds this (GPU) worker.
    """
    if not spec.callback_url:
        return
    from spotlight.server.jobqueue import enqueue_callback
    from worker.webhook import job_summary

    payload = job_summary(spec.model_dump(mode="json"), status, error.model_dump() if error else None, regions)

    try:
        enqueue_callback(connection, settings, spec.callback_url, payload, spec.job_id)
    except Exception:  # noqa: BLE001 - the job has ended; a callback that cannot be queued is logged
        log.exception("the callback of %s could not be queued", spec.job_id)


def write_results(
    store: ArtifactStore,
    job_id: str,
    result: SearchResult,
    regions: list[records.RegionRecord],
    members: list[RegionMembers],
    objective: Objective = "max_loss",
    level: float = verdict.DEFAULT_LEVEL,
    untested: str | None = None,
) -> None:
    """weights.npy, members_<k>.npy (by weight) and members_<k>_by_contribution.npy, each with its
    members' weights beside it (`member_weights_file`), pca_basis.npy for a search with
    `pca_components` (its regions' distance is measured along those axes: scoring other rows needs
    them), then regions.json last: its presence means the rest is whole. regions.json also carries
    `loss_reference`, the loss that contributes nothing, so the API computes a page's contributions
    without reading every loss.
    """
    weights = np.ascontiguousarray(result.weights, dtype=np.float32)
    reference = reference_loss(result.losses, objective)
    try:
        store.save_npy(job_file(job_id, WEIGHTS_FILE), weights)
        if result.basis is not None:
            store.save_npy(job_file(job_id, BASIS_FILE), np.ascontiguousarray(result.basis, dtype=np.float64))
        for k, picked in enumerate(members):
            for name, rows in (
                (members_file(k), picked.by_weight),
                (members_by_contribution_file(k), picked.by_contribution),
            ):
                store.save_npy(job_file(job_id, name), rows)
                store.save_npy(job_file(job_id, member_weights_file(name)), np.ascontiguousarray(weights[rows, k]))
        document = records.document(regions, level, objective, reference, untested)
        store.write_json(job_file(job_id, REGIONS_FILE), document.model_dump(mode="json"))
    except (StoreError, OSError) as exc:
        raise JobFailed(ErrorCode.STORE_ERROR, f"The results could not be written to the store: {exc}") from exc


def _summary(
    spec: JobSpec, status: JobStatus, error: JobError | None = None, result: SearchResult | None = None
) -> dict[str, Any]:
    return {
        "job_id": spec.job_id,
        "status": JobStatus(status).value,
        "error": error.model_dump() if error else None,
        "regions": len(result.regions) if result else 0,
        "device": result.device if result else None,
        "elapsed_s": result.elapsed_s if result else None,
        # The search's cost in passes over X (this run's; bench/speed.py prints it per region beside the
        # engine alone's) and the kernel `auto` ran.
        "passes": round(result.passes, 1) if result else None,
        "kernel": result.regions[0].kernel if result and result.regions else None,
    }
