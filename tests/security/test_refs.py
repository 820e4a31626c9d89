"""References (`{"uri": ...}`) read only inside the operator's sandbox."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import fsspec
import pytest

from service.errors import http_status
from spotlight.contract.protocol import ErrorCode
from spotlight.server.refs import (
    OpenedReference,
    ReferenceRefused,
    ReferenceTooLarge,
    ReferenceUnreadable,
    open_reference,
)
from spotlight.server.settings import Settings


def roots(*paths: Path, **kw: object) -> Settings:
    return Settings(allowed_roots=[str(p) for p in paths], **kw)  # type: ignore[arg-type]


def read(ref: OpenedReference) -> bytes:
    with ref:
        return ref.file.read()


# ----- file:// inside the roots -----
def test_a_file_inside_a_root_is_opened_with_its_size_and_suffix(tree) -> None:
    ref = open_reference(f"file://{tree['root']}/data.npz", roots(tree["root"]))
    assert (ref.size, ref.name, ref.suffix) == (len(b"inside-bytes"), "data.npz", ".npz")
    assert read(ref) == b"inside-bytes"


def test_nested_files_and_symlinks_that_stay_inside_are_allowed(tree) -> None:
    s = roots(tree["root"])
    assert read(open_reference(f"file://{tree['root']}/sub/inner.npy", s)) == b"inner"
    assert read(open_reference(f"file://{tree['root']}/link_in.npz", s)) == b"inside-bytes"
    assert read(open_reference(f"file://localhost{tree['root']}/data.npz", s)) == b"inside-bytes"


def test_a_root_given_through_a_symlink_still_works(tree) -> None:
    alias = tree["tmp"] / "alias"
    alias.symlink_to(tree["root"])
    assert read(open_reference(f"file://{alias}/data.npz", roots(alias))) == b"inside-bytes"


# ----- file:// escapes -----
@pytest.mark.parametrize(
    "path",
    [
        "{root}/../outside/secret.npz",
        "{root}/%2e%2e/outside/secret.npz",
        "{root}/sub/../../outside/secret.npz",
        "{outside}/secret.npz",
        "/etc/passwd",
        "{root}/link_out.npz",
        "{root}/rel_link_out.npz",
        "{root}/dir_out/secret.npz",
        "{evil}/x.npz",
    ],
)
def test_paths_leading_outside_the_roots_are_refused(tree, path: str) -> None:
    uri = "file://" + path.format(root=tree["root"], outside=tree["outside"], evil=tree["evil"])
    with pytest.raises(ReferenceRefused) as info:
        open_reference(uri, roots(tree["root"]))
    assert info.value.code == ErrorCode.REFERENCE_REFUSED
    assert http_status(info.value) == 400
    assert "SECRET" not in str(info.value.to_error())


@pytest.mark.parametrize(
    "uri",
    [
        "file://otherhost/{root}/data.npz",
        "file:{root_rel}/data.npz",
        "{root}/data.npz",
        "data.npz",
        "",
        "file://{root}/da\x00ta.npz",
    ],
)
def test_malformed_file_references_are_refused(tree, uri: str) -> None:
    uri = uri.format(root=tree["root"], root_rel=str(tree["root"]).lstrip("/"))
    with pytest.raises(ReferenceRefused):
        open_reference(uri, roots(tree["root"]))


def test_no_roots_means_no_local_files(tree) -> None:
    with pytest.raises(ReferenceRefused) as info:
        open_reference(f"file://{tree['root']}/data.npz", Settings())
    assert "SPOTLIGHT_ALLOWED_ROOTS" in info.value.message


def test_file_scheme_can_be_switched_off(tree) -> None:
    with pytest.raises(ReferenceRefused) as info:
        open_reference(f"file://{tree['root']}/data.npz", roots(tree["root"], allowed_schemes=["s3"]))
    assert info.value.reason == "scheme"


def test_a_final_component_swapped_for_a_symlink_after_the_check_is_refused(tree, monkeypatch) -> None:
    """TOCTOU: the check saw a plain path; by the time of open() it is a symlink leading out."""
    swap = tree["root"] / "swap.npz"
    swap.symlink_to(tree["outside"] / "secret.npz")
    monkeypatch.setattr(os.path, "realpath", lambda p, **kw: os.path.abspath(p))
    with pytest.raises(ReferenceRefused):
        open_reference(f"file://{swap}", roots(tree["root"]))


def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(tree, monkeypatch) -> None:
    monkeypatch.setattr(os.path, "realpath", lambda p, **kw: os.path.abspath(p))
    with pytest.raises(ReferenceRefused) as info:
        open_reference(f"file://{tree['root']}/dir_out/secret.npz", roots(tree["root"]))
    assert "moved outside" in info.value.message


# ----- file:// unreadable -----
def test_missing_files_are_unreadable_not_refused(tree) -> None:
    with pytest.raises(ReferenceUnreadable) as info:
        open_reference(f"file://{tree['root']}/nope.npz", roots(tree["root"]))
    assert (info.value.code, http_status(info.value), info.value.reason) == (
        ErrorCode.REFERENCE_UNREADABLE,
        400,
        "not_found",
    )


def test_directories_and_fifos_are_not_read(tree) -> None:
    fifo = tree["root"] / "pipe.npz"
    os.mkfifo(fifo)
    for target in (tree["root"] / "sub", fifo):  # a FIFO with no writer must not hang the server
        with pytest.raises(ReferenceUnreadable) as info:
            open_reference(f"file://{target}", roots(tree["root"]))
        assert info.value.reason == "not_a_file"


PERMISSION_CHECK = """
import os, pwd, sys
from spotlight.server.refs import ReferenceUnreadable, open_reference  # imported first: Python may live under /root
from spotlight.server.settings import Settings
root, locked = sys.argv[1], sys.argv[2]
settings = Settings(allowed_roots=[root], data_dir=root)
if os.geteuid() == 0:  # root reads everything: drop to nobody, as a server not run as root would be
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    assert os.geteuid() == nobody.pw_uid
try:
    open_reference("file://" + locked, settings)
except ReferenceUnreadable as exc:
    print(exc.reason, exc.code)
else:
    print("read")
"""


def test_files_the_server_may_not_read_are_unreadable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs as a user that cannot read the file (under CI's root: `nobody`, in a subprocess)."""
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="spotlight-perm-"))  # outside pytest's 0700 tmp: nobody must reach it
    try:
        root = base / "root"
        root.mkdir()
        for p in (base, root):
            p.chmod(0o755)
        locked = root / "locked.npz"
        locked.write_bytes(b"x")
        locked.chmod(0)
        done = subprocess.run(
            [sys.executable, "-c", PERMISSION_CHECK, str(root), str(locked)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["permission", ErrorCode.REFERENCE_UNREADABLE]
        locked.chmod(0o644)  # and the same file, once readable, is read: the refusal was the permission
        readable = subprocess.run(
            [sys.executable, "-c", PERMISSION_CHECK, str(root), str(locked)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert readable.stdout.split() == ["read"], readable.stderr
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_files_above_the_size_limit_are_refused_with_413(tree) -> None:
    with pytest.raises(ReferenceTooLarge) as info:
        open_reference(f"file://{tree['root']}/data.npz", roots(tree["root"], max_upload_bytes=5))
    assert (http_status(info.value), info.value.code) == (413, ErrorCode.TOO_LARGE)
    assert info.value.details["limit"] == 5
    assert isinstance(info.value, ReferenceRefused)


# ----- other schemes -----
def test_object_store_schemes_are_refused_unless_allowed(tree) -> None:
    with pytest.raises(ReferenceRefused) as info:
        open_reference("s3://bucket/key.parquet", roots(tree["root"]))
    assert info.value.reason == "scheme"
    assert "'s3'" in info.value.message


def test_an_allowed_fsspec_scheme_is_read(tree) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/refs-test/x.parquet", b"PAR1data")
    try:
        ref = open_reference("memory://refs-test/x.parquet", Settings(allowed_schemes=["memory"]))
        assert (ref.size, ref.suffix) == (8, ".parquet")
        assert read(ref) == b"PAR1data"
        with pytest.raises(ReferenceTooLarge):
            open_reference("memory://refs-test/x.parquet", Settings(allowed_schemes=["memory"], max_upload_bytes=4))
        with pytest.raises(ReferenceUnreadable):
            open_reference("memory://refs-test/missing.parquet", Settings(allowed_schemes=["memory"]))
    finally:
        fs.rm("/refs-test", recursive=True)


@pytest.mark.parametrize(
    "uri, schemes",
    [
        ("local://{root}/../outside/secret.npz", ["local"]),
        ("zip://secret.npz::file://{outside}/a.zip", ["zip", "file"]),
        ("simplecache::file://{outside}/secret.npz", ["simplecache", "file"]),
        ("gopher://example.com/x", ["gopher"]),
    ],
)
def test_wrapping_and_local_filesystems_are_never_accepted(tree, uri: str, schemes: list[str]) -> None:
    uri = uri.format(root=tree["root"], outside=tree["outside"])
    with pytest.raises(ReferenceRefused):
        open_reference(uri, roots(tree["root"], allowed_schemes=schemes))


# ----- http(s):// -----
def lookup(table: dict[str, str]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [table[host]]

    return resolve


def test_http_references_are_refused_by_default(http_server) -> None:
    http_server.files["/x.npz"] = b"npzbytes"
    with pytest.raises(ReferenceRefused) as info:
        open_reference(http_server.url("/x.npz"), Settings())
    assert info.value.reason == "scheme"
    assert http_server.seen_hosts == []


def test_http_references_to_loopback_are_refused_even_when_the_host_is_listed(http_server) -> None:
    http_server.files["/x.npz"] = b"npzbytes"
    s = Settings(allowed_schemes=["http"], allowed_hosts=["127.0.0.1", "data.test"])
    for url in (http_server.url("/x.npz"), http_server.url("/x.npz", "data.test")):
        with pytest.raises(ReferenceRefused) as info:
            open_reference(url, s, resolver=lookup({"data.test": "127.0.0.1"}))
        assert info.value.reason == "private_address"
    assert http_server.seen_hosts == []


def test_http_references_are_read_when_host_and_private_addresses_are_allowed(http_server) -> None:
    http_server.files["/dir/x.npz"] = b"npzbytes"
    s = Settings(allowed_schemes=["http"], allowed_hosts=["data.test"], allow_private_addresses=True)
    ref = open_reference(http_server.url("/dir/x.npz", "data.test"), s, resolver=lookup({"data.test": "127.0.0.1"}))
    assert (ref.size, ref.name, ref.suffix) == (8, "x.npz", ".npz")
    assert read(ref) == b"npzbytes"


def test_http_redirects_off_the_allow_list_are_refused(http_server) -> None:
    http_server.files["/x.npz"] = b"npzbytes"
    http_server.redirects["/go"] = http_server.url("/x.npz", "127.0.0.1")
    s = Settings(allowed_schemes=["http"], allowed_hosts=["data.test"], allow_private_addresses=True)
    with pytest.raises(ReferenceRefused) as info:
        open_reference(http_server.url("/go", "data.test"), s, resolver=lookup({"data.test": "127.0.0.1"}))
    assert info.value.reason == "host_not_allowed"
    assert len(http_server.seen_hosts) == 1  # the redirect target was never asked


def test_http_errors_and_oversize_bodies(http_server) -> None:
    s = Settings(
        allowed_schemes=["http"], allowed_hosts=["data.test"], allow_private_addresses=True, max_upload_bytes=100_000
    )
    r = lookup({"data.test": "127.0.0.1"})
    with pytest.raises(ReferenceUnreadable) as info:
        open_reference(http_server.url("/missing.npz", "data.test"), s, resolver=r)
    assert info.value.details["status"] == 404
    with pytest.raises(ReferenceTooLarge):  # declared length above the limit: nothing downloaded
        open_reference(http_server.url("/lies", "data.test"), s, resolver=r)
    with pytest.raises(ReferenceTooLarge):  # no declared length: counting stops it at the limit
        open_reference(http_server.url("/endless", "data.test"), s, resolver=r)


# ----- each guard on its own (tools/mutate.py: a check that another one happens to cover still counts) -----
@pytest.mark.parametrize("scheme", ["local", "zip", "tar", "dir", "data", "simplecache", "filecache", "reference"])
def test_wrapper_schemes_are_refused_by_name_even_unchained_and_allow_listed(tree, scheme: str) -> None:
    with pytest.raises(ReferenceRefused) as info:
        open_reference(f"{scheme}://{tree['outside']}/secret.npz", roots(tree["root"], allowed_schemes=[scheme]))
    assert info.value.reason == "scheme"


def test_a_chained_reference_is_refused_even_when_every_part_is_allowed(tree) -> None:
    uri = f"memory://x.npz::file://{tree['outside']}/secret.npz"
    with pytest.raises(ReferenceRefused) as info:
        open_reference(uri, roots(tree["root"], allowed_schemes=["memory", "file"]))
    assert info.value.reason == "scheme" and "chained" in info.value.message


def test_a_file_in_the_second_root_is_read_and_one_outside_all_roots_is_refused_before_opening(tree) -> None:
    second = tree["tmp"] / "second"
    second.mkdir()
    (second / "b.npz").write_bytes(b"second-root")
    both = roots(tree["root"], second)
    assert read(open_reference(f"file://{second}/b.npz", both)) == b"second-root"
    with pytest.raises(ReferenceRefused) as info:
        open_reference(f"file://{tree['outside']}/secret.npz", both)
    assert info.value.reason == "outside_roots" and "outside the folders" in info.value.message


def test_the_size_limit_is_inclusive(tree) -> None:
    size = len(b"inside-bytes")
    assert open_reference(f"file://{tree['root']}/data.npz", roots(tree["root"], max_upload_bytes=size)).size == size
    with pytest.raises(ReferenceTooLarge) as info:
        open_reference(f"file://{tree['root']}/data.npz", roots(tree["root"], max_upload_bytes=size - 1))
    assert info.value.details["size"] == size
