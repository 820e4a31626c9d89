"""Targeted mutation check of the modules that guard tenants and data.

Each mutation below is one small, plausible slip — an operator flipped, a condition dropped, a
constant changed — in `spotlight/server/keys.py` (with the job states of `spotlight/contract/jobstate.py`),
`service/auth.py` or the reference checks (`spotlight/server/refs.py`, `spotlight/server/netguard.py`). For each, the script copies the repository (never
touching the working tree), applies the mutation, and runs the tests that should notice. A
mutant whose tests still pass *survived*: either a test is missing, or the slip is harmless
(docs/testing.md lists those, and why).

    python tools/mutate.py                 # every mutation (about 7 minutes on 2 cores)
    python tools/mutate.py -k refs -k auth # only those whose id contains one of the words
    python tools/mutate.py --list          # the mutations, without running anything

Exit status: 0 when every mutant is killed or listed as harmless in HARMLESS, 1 otherwise, 2 when
the unmutated copy already fails its tests or a mutation no longer matches the code (update it).
Not part of `make test`: it runs each test selection once per mutant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROTOCOL_TESTS = [
    "tests/service/test_protocol.py",
    "tests/service/test_idempotency.py",
    "tests/service/test_jobs.py",
    "tests/service/test_auth.py",
    "tests/service/test_datasets.py",
    "tests/runtime/test_task.py",
]
AUTH_TESTS = ["tests/service/test_auth.py"]
ROUND3_TESTS = ["tests/service/test_round_three.py"]
JOBSTATE_TESTS = ["tests/service/test_protocol.py", "tests/test_jobstate.py", "tests/service/test_jobs.py"]
REFS_TESTS = ["tests/security/test_refs.py", "tests/security/test_references_api.py"]
NETGUARD_TESTS = ["tests/security/test_netguard.py", "tests/security/test_refs.py", "tests/ux/test_webhook.py"]


@dataclass(frozen=True)
class Mutation:
    id: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


def m(id: str, path: str, before: str, after: str, tests: list[str]) -> Mutation:
    return Mutation(id, path, before, after, tuple(tests))


MUTATIONS = [
    # ----- spotlight/server/keys.py: the keys that separate tenants -----
    m(
        "protocol.idem-key-without-tenant",
        "spotlight/server/keys.py",
        'return f"{self.prefix}:idem:{tenant}:{key}"',
        'return f"{self.prefix}:idem:{key}"',
        PROTOCOL_TESTS,
    ),
    m(
        "protocol.jobs-key-without-tenant",
        "spotlight/server/keys.py",
        'return f"{self.prefix}:tenant:{tenant}:jobs"',
        'return f"{self.prefix}:tenant:jobs"',
        PROTOCOL_TESTS,
    ),
    m(
        "protocol.datasets-key-without-tenant",
        "spotlight/server/keys.py",
        'return f"{self.prefix}:tenant:{tenant}:datasets"',
        'return f"{self.prefix}:tenant:datasets"',
        PROTOCOL_TESTS,
    ),
    m(
        "protocol.active-key-without-tenant",
        "spotlight/server/keys.py",
        'return f"{self.prefix}:tenant:{tenant}:active"',
        'return f"{self.prefix}:tenant:active"',
        PROTOCOL_TESTS,
    ),
    m(
        "protocol.cancel-key-shared",
        "spotlight/server/keys.py",
        'return f"{self.prefix}:cancel:{job_id}"',
        'return f"{self.prefix}:cancel:"',
        PROTOCOL_TESTS,
    ),
    m(
        "protocol.blob-refs-key-shared",
        "spotlight/server/keys.py",
        'return f"{self.prefix}:blob:{sha256}:refs"',
        'return f"{self.prefix}:blob:refs"',
        PROTOCOL_TESTS,
    ),
    # ----- spotlight/contract/jobstate.py: the one mapping from RQ's statuses and the worker's record -----
    m(
        "jobstate.worker-canceled-ignored",
        "spotlight/contract/jobstate.py",
        "    if own in TERMINAL:\n",
        "    if own in TERMINAL - {JobStatus.CANCELED}:\n",
        JOBSTATE_TESTS,
    ),
    m(
        "jobstate.worker-end-ignored",
        "spotlight/contract/jobstate.py",
        "    if own in TERMINAL:\n",
        "    if False:\n",
        JOBSTATE_TESTS,
    ),
    m(
        "jobstate.started-is-queued",
        "spotlight/contract/jobstate.py",
        '"started": JobStatus.RUNNING,',
        '"started": JobStatus.QUEUED,',
        JOBSTATE_TESTS,
    ),
    m(
        "jobstate.stopped-is-failed",
        "spotlight/contract/jobstate.py",
        '"stopped": JobStatus.CANCELED,',
        '"stopped": JobStatus.FAILED,',
        JOBSTATE_TESTS,
    ),
    m(
        "jobstate.unknown-is-running",
        "spotlight/contract/jobstate.py",
        'return _FROM_RQ.get(rq_status or "", JobStatus.QUEUED)',
        'return _FROM_RQ.get(rq_status or "", JobStatus.RUNNING)',
        JOBSTATE_TESTS,
    ),
    m(
        "jobstate.unrecorded-failure-is-canceled",
        "spotlight/contract/jobstate.py",
        "return _UNRECORDED_FAILURE if status == JobStatus.FAILED else _CANCELED",
        "return _CANCELED if status == JobStatus.FAILED else _UNRECORDED_FAILURE",
        JOBSTATE_TESTS,
    ),
    m(
        "protocol.job-id-short",
        "spotlight/contract/protocol.py",
        'return "job_" + secrets.token_hex(12)',
        'return "job_" + secrets.token_hex(1)',
        PROTOCOL_TESTS,
    ),
    # ----- service/auth.py: who is calling -----
    m(
        "auth.any-key-matches",
        "service/auth.py",
        "if hmac.compare_digest(digest, stored.encode()):",
        "if True:",
        AUTH_TESTS,
    ),
    m(
        "auth.first-tenant-wins-early-exit",
        "service/auth.py",
        "                found = tenant\n",
        "                return tenant\n",
        AUTH_TESTS,
    ),
    m("auth.never-open", "service/auth.py", "return not self.entries", "return False", AUTH_TESTS),
    m("auth.always-open", "service/auth.py", "return not self.entries", "return True", AUTH_TESTS),
    m(
        "auth.tenant-name-unchecked",
        "service/auth.py",
        "if not sep or not rest or not _TENANT.fullmatch(tenant):",
        "if not sep or not rest:",
        AUTH_TESTS,
    ),
    m(
        "auth.tenant-name-any-chars",
        "service/auth.py",
        '_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")',
        '_TENANT = re.compile(r".{1,64}")',
        AUTH_TESTS,
    ),
    m(
        "auth.empty-key-accepted",
        "service/auth.py",
        "if not sep or not rest or not _TENANT.fullmatch(tenant):",
        "if not sep or not _TENANT.fullmatch(tenant):",
        AUTH_TESTS,
    ),
    m(
        "auth.hashed-entries-as-plain-keys",
        "service/auth.py",
        'if rest.startswith("sha256:"):',
        "if False:",
        AUTH_TESTS,
    ),
    m("auth.hash-case-kept", "service/auth.py", "return digest.lower(), tenant", "return digest, tenant", AUTH_TESTS),
    m("auth.hash-length-unchecked", "service/auth.py", "if not _HEX64.fullmatch(digest):", "if False:", AUTH_TESTS),
    m("auth.comments-parsed", "service/auth.py", 'if line and not line.startswith("#"):', "if line:", AUTH_TESTS),
    m(
        "auth.any-scheme",
        "service/auth.py",
        'if scheme.lower() != "bearer" or not token.strip():',
        "if not token.strip():",
        AUTH_TESTS,
    ),
    m(
        "auth.blank-token",
        "service/auth.py",
        'if scheme.lower() != "bearer" or not token.strip():',
        'if scheme.lower() != "bearer":',
        AUTH_TESTS,
    ),
    # ----- spotlight/server/refs.py: the file:// sandbox, sizes, schemes -----
    m(
        "refs.dotdot-allowed",
        "spotlight/server/refs.py",
        'if ".." in PurePosixPath(path).parts:',
        "if False:",
        REFS_TESTS,
    ),
    m(
        "refs.prefix-containment",
        "spotlight/server/refs.py",
        "return os.path.commonpath([path, root]) == root",
        "return path.startswith(root)",
        REFS_TESTS,
    ),
    m(
        "refs.outside-root-allowed",
        "spotlight/server/refs.py",
        "root = next((r for r in roots if _inside(real, r)), None)",
        "root = roots[0]",
        REFS_TESTS,
    ),
    m(
        "refs.no-roots-reads-anything",
        "spotlight/server/refs.py",
        "    if not roots:\n        raise refused(",
        "    if False:\n        raise refused(",
        REFS_TESTS,
    ),
    m(
        "refs.symlink-followed-at-open",
        "spotlight/server/refs.py",
        'flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) |',
        "flags = os.O_RDONLY |",
        REFS_TESTS,
    ),
    m(
        "refs.non-regular-files-read",
        "spotlight/server/refs.py",
        "if not stat.S_ISREG(st.st_mode):",
        "if False:",
        REFS_TESTS,
    ),
    m(
        "refs.fd-path-not-rechecked",
        "spotlight/server/refs.py",
        "if not _inside(opened_path, root):",
        "if False:",
        REFS_TESTS,
    ),
    m(
        "refs.size-limit-off-by-one",
        "spotlight/server/refs.py",
        "if size > settings.max_upload_bytes:",
        "if size > settings.max_upload_bytes + 1:",
        REFS_TESTS,
    ),
    m(
        "refs.size-limit-inclusive",
        "spotlight/server/refs.py",
        "if size > settings.max_upload_bytes:",
        "if size >= settings.max_upload_bytes:",
        REFS_TESTS,
    ),
    m(
        "refs.stream-size-unchecked",
        "spotlight/server/refs.py",
        "                size += len(chunk)\n                _check_size(size, uri, settings)\n",
        "                size += len(chunk)\n",
        REFS_TESTS,
    ),
    m(
        "refs.declared-size-unchecked",
        "spotlight/server/refs.py",
        "_check_size(int(declared), uri, settings)",
        "pass",
        REFS_TESTS,
    ),
    m("refs.scheme-not-checked", "spotlight/server/refs.py", "if scheme not in allowed:", "if False:", REFS_TESTS),
    m(
        "refs.chained-allowed",
        "spotlight/server/refs.py",
        'if "::" in uri.split("?", 1)[0] and',
        "if False and",
        REFS_TESTS,
    ),
    m(
        "refs.http-error-read",
        "spotlight/server/refs.py",
        "if response.status_code != 200:",
        "if response.status_code >= 500:",
        REFS_TESTS,
    ),
    m(
        "refs.remote-host-file-url",
        "spotlight/server/refs.py",
        'if netloc not in ("", "localhost"):',
        "if False:",
        REFS_TESTS,
    ),
    m(
        "refs.wrapper-fs-allowed",
        "spotlight/server/refs.py",
        '        "local",\n        "http",\n        "https",\n        "zip",\n',
        '        "http",\n        "https",\n',
        REFS_TESTS,
    ),
    # ----- spotlight/server/netguard.py: where the server may connect -----
    m(
        "netguard.embedded-v4-ignored",
        "spotlight/server/netguard.py",
        "if inner is not None and is_forbidden_address(inner):",
        "if False:",
        NETGUARD_TESTS,
    ),
    m(
        "netguard.wildcard-without-dot",
        "spotlight/server/netguard.py",
        'if host.endswith("." + suffix):',
        "if host.endswith(suffix):",
        NETGUARD_TESTS,
    ),
    m(
        "netguard.local-names-allowed",
        "spotlight/server/netguard.py",
        "if _is_local_name(host) and not private_ok:",
        "if False:",
        NETGUARD_TESTS,
    ),
    m(
        "netguard.private-addresses-allowed",
        "spotlight/server/netguard.py",
        "        bad = [str(a) for a in addresses if is_forbidden_address(a)]",
        "        bad = []",
        NETGUARD_TESTS,
    ),
    m(
        "netguard.empty-allowlist-allows-all",
        "spotlight/server/netguard.py",
        "if not host_allowed(host, settings.allowed_hosts):",
        "if False:",
        NETGUARD_TESTS,
    ),
    m(
        "netguard.octet-bound",
        "spotlight/server/netguard.py",
        "if any(v > 255 for v in head)",
        "if any(v > 256 for v in head)",
        NETGUARD_TESTS,
    ),
    m(
        "netguard.octal-as-decimal",
        "spotlight/server/netguard.py",
        "        return int(part, 8)",
        "        return int(part, 10)",
        NETGUARD_TESTS,
    ),
    m("netguard.nat64-ignored", "spotlight/server/netguard.py", "if address in _NAT64:", "if False:", NETGUARD_TESTS),
    m(
        "netguard.credentials-kept-in-logs",
        "spotlight/server/netguard.py",
        "if parts.username is None and parts.password is None:",
        "if True:",
        NETGUARD_TESTS,
    ),
    # issue 25: the round-three guards (tests/service/test_round_three.py)
    m(
        "round3.idempotency-claim-not-atomic",
        "service/job_registry.py",
        "if self.r.set(name, mine, nx=True, ex=IDEMPOTENCY_PENDING_TTL_S):",
        "if self.r.set(name, mine, ex=IDEMPOTENCY_PENDING_TTL_S):",
        ROUND3_TESTS,
    ),
    m(
        "round3.score-body-uncapped",
        "service/limits.py",
        "return self.score_limit",
        "return self.inline_limit",
        ROUND3_TESTS,
    ),
    m(
        "round3.results-outlive-their-dataset",
        "service/job_results.py",
        "if not jobs.r.exists(jobs.keys.dataset(spec.dataset_id)):",
        "if False:",
        ROUND3_TESTS,
    ),
    m("round3.any-host", "service/host_check.py", "if not allowed(header, self.trusted):", "if False:", ROUND3_TESTS),
    m(
        "round3.no-quota",
        "service/dataset_registry.py",
        "if self.quota and used > self.quota:",
        "if False:",
        ROUND3_TESTS,
    ),
    m(
        "round3.device-prefix-match",
        "spotlight/contract/params.py",
        "if not _DEVICE.fullmatch(v):",
        "if not _DEVICE.match(v):",
        ROUND3_TESTS,
    ),
    m(
        "round3.listing-reindexes-every-job",
        "service/job_registry.py",
        "if self.r.exists(self.keys.tenant_status_indexed(tenant)):",
        "if False:",
        ROUND3_TESTS,
    ),
    m(
        "round3.disk-full-is-500",
        "service/errors.py",
        "if isinstance(exc, OSError) and exc.errno in _DISK_FULL:",
        "if False:",
        ROUND3_TESTS,
    ),
    m(
        "round3.worker-memory-not-admitted",
        "service/job_submission.py",
        "if need > settings.worker_memory_bytes:",
        "if False:",
        ["tests/service/test_job_memory.py"],
    ),
    # issue 25 measured (bench/attacks.py): what kept the API answering under the score attacks
    m(
        "round3.score-body-outside-its-slot",
        "service/routers/score.py",
        "async def _raw_body(request: Request, _slot: Annotated[None, Depends(_score_slot)]) -> bytes:",
        "async def _raw_body(request: Request) -> bytes:",
        ROUND3_TESTS,
    ),
    m(
        "round3.refused-body-drained",
        "service/limits.py",
        'if message["type"] == "http.response.start" and not body_read:',
        "if False:",
        ROUND3_TESTS,
    ),
    m(
        "round3.answer-dumped-whole",
        "service/routers/score.py",
        "ITEMS_PER_CHUNK = 16384",
        "ITEMS_PER_CHUNK = 10**9",
        ROUND3_TESTS,
    ),
    m(
        "round3.slices-of-256k",
        "service/ingest/inline_json.py",
        "SLICE_CHARS = 1 << 15",
        "SLICE_CHARS = 1 << 18",
        ROUND3_TESTS,
    ),
    # issue 25 breaks 5 and 6: every phase honours the time limit and cancel, and yields
    m(
        "round3.describe-ignores-cancel",
        "worker/task.py",
        "if reporter is not None and reporter.should_stop():",
        "if False:",
        ["tests/runtime/test_every_phase.py"],
    ),
    m(
        "round3.describe-never-yields",
        "worker/task.py",
        "if k > started_at and should_yield is not None and should_yield():",
        "if False:",
        ["tests/runtime/test_every_phase.py"],
    ),
]

# Mutants that survive on purpose, with the reason (also in docs/testing.md).
HARMLESS: dict[str, str] = {
    "auth.first-tenant-wins-early-exit": "same answer; only the comparison's timing changes, and tenants' keys "
    "are distinct hashes, so at most one entry matches",
    "refs.dotdot-allowed": "defence in depth: realpath() + component-wise containment already refuse every "
    "path that '..' leads outside a root, and one that stays inside is harmless",
    "refs.symlink-followed-at-open": "defence in depth against a swap between check and open; the descriptor's "
    "real path is checked again after opening (refs.fd-path-not-rechecked)",
    "netguard.nat64-ignored": "Python's address table counts ::/8, and so all of 64:ff9b::/96, as reserved: every "
    "NAT64 address is refused already; the tests pin that NAT64 forms of private "
    "addresses stay refused should a Python release change that table",
}


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | stale | timeout
    seconds: float
    detail: str = ""


def copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".spotlight", "*.egg-info", "out"
    )
    shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout", "120", *tests]
    try:
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
    return done.returncode, failed[0] if failed else last


def mutate(root: Path, mutation: Mutation) -> str | None:
    """Apply the mutation in the copy; returns why it cannot be applied, or None."""
    path = root / mutation.path
    text = path.read_text()
    count = text.count(mutation.before)
    if count != 1:
        return f"the original text occurs {count} times in {mutation.path}"
    path.write_text(text.replace(mutation.before, mutation.after))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="only mutations whose id contains this word")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    args = parser.parse_args(argv)
    chosen = [mu for mu in MUTATIONS if not args.k or any(word in mu.id for word in args.k)]
    if args.list:
        for mu in chosen:
            print(f"{mu.id:42s} {mu.path}")
        return 0

    with tempfile.TemporaryDirectory(prefix="spotlight-mutants-") as tmp:
        pristine = Path(tmp) / "pristine"
        copy_repo(pristine)
        suites = sorted({t for mu in chosen for t in mu.tests})
        code, detail = run_tests(pristine, tuple(suites), args.timeout * 2)
        if code != 0:
            print(f"the unmutated code fails its tests: {detail}")
            return 2
        outcomes: list[Outcome] = []
        for mu in chosen:
            started = time.monotonic()
            original = (pristine / mu.path).read_text()
            try:  # one file changed in the copy, put back after (no bytecode is written to go stale)
                problem = mutate(pristine, mu)
                if problem:
                    outcomes.append(Outcome(mu, "stale", 0.0, problem))
                else:
                    code, detail = run_tests(pristine, mu.tests, args.timeout)
                    status = "timeout" if code == -1 else ("survived" if code == 0 else "killed")
                    outcomes.append(Outcome(mu, status, time.monotonic() - started, detail))
            finally:
                (pristine / mu.path).write_text(original)
            o = outcomes[-1]
            note = " (harmless)" if o.status == "survived" and mu.id in HARMLESS else ""
            print(f"{o.status:9s}{note:12s} {mu.id:42s} {o.seconds:6.1f} s  {o.detail[:90]}", flush=True)

    killed = sum(o.status in ("killed", "timeout") for o in outcomes)
    survivors = [o for o in outcomes if o.status == "survived" and o.mutation.id not in HARMLESS]
    harmless = [o for o in outcomes if o.status == "survived" and o.mutation.id in HARMLESS]
    stale = [o for o in outcomes if o.status == "stale"]
    print(
        f"\n{len(outcomes)} mutants: {killed} killed, {len(harmless)} survived as harmless, "
        f"{len(survivors)} survived, {len(stale)} stale"
    )
    for o in survivors:
        print(f"  SURVIVED {o.mutation.id}: {o.mutation.path}: {o.mutation.before!r} -> {o.mutation.after!r}")
    for o in stale:
        print(f"  STALE    {o.mutation.id}: {o.detail}")
    return 2 if stale else (1 if survivors else 0)


if __name__ == "__main__":
    raise SystemExit(main())
