"""safe_extract: malicious archives are refused with a clear error; good ones extract."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path

import pytest
from test_checkpoints_support import make_checkpoint, member, tar_with

from checkpoints.errors import CheckpointError, UnsafeArchiveError
from checkpoints.extract import archive_kind, index_archive, safe_extract

MANIFEST = (member("manifest.json"), b"{}")


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([(member("/etc/evil"), b"x")], "absolute path"),
        ([(member("../evil"), b"x")], "contains a '..' component"),
        ([(member("a/../../evil"), b"x")], "contains a '..' component"),
        ([(member("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "links to the absolute path"),
        ([(member("link", tarfile.SYMTYPE, "../../outside"), None)], "outside the archive"),
        ([(member("d/link", tarfile.SYMTYPE, "../.."), None)], "outside the archive"),
        ([(member("hard", tarfile.LNKTYPE, "../outside"), None)], "'..' component|outside the archive"),
        ([(member("hard", tarfile.LNKTYPE, "/etc/passwd"), None)], "links to the absolute path"),
        ([(member("dev", tarfile.CHRTYPE), None)], "device file or fifo"),
        ([(member("blk", tarfile.BLKTYPE), None)], "device file or fifo"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "device file or fifo"),
    ],
)
def test_malicious_members_are_refused(tmp_path: Path, members: list, expected: str) -> None:
    archive = tar_with([MANIFEST, *members], tmp_path / "evil.tar")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=expected):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_writing_through_an_inner_symlink_to_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    archive = tar_with([MANIFEST, (member("escape", tarfile.SYMTYPE, "../outside"), None),
                        (member("escape/file"), b"x")], tmp_path / "evil.tar")  # fmt: skip
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "outside" / "file").exists()


def test_size_and_member_limits(tmp_path: Path) -> None:
    big = tar_with([MANIFEST, (member("model.bin"), b"x" * 5000)], tmp_path / "big.tar")
    with pytest.raises(UnsafeArchiveError, match=r"expands to more than 4096 bytes"):
        safe_extract(big, tmp_path / "a", max_bytes=4096)
    many = tar_with([MANIFEST, *[(member(f"f{i}"), b"x") for i in range(20)]], tmp_path / "many.tar")
    with pytest.raises(UnsafeArchiveError, match=r"more than 10 members"):
        safe_extract(many, tmp_path / "b", max_members=10)


def test_links_inside_the_archive_are_allowed(tmp_path: Path) -> None:
    archive = tar_with([
        MANIFEST, (member("real/model.bin"), b"weights"),
        (member("model.bin", tarfile.SYMTYPE, "real/model.bin"), None),
        (member("copy.bin", tarfile.LNKTYPE, "real/model.bin"), None),
    ], tmp_path / "ok.tar")  # fmt: skip
    root = safe_extract(archive, tmp_path / "dest")
    assert (root / "model.bin").read_bytes() == b"weights"
    assert (root / "copy.bin").read_bytes() == b"weights"


def test_single_top_level_directory_is_the_root(tmp_path: Path) -> None:
    archive = tar_with([(member("ckpt", tarfile.DIRTYPE, mode=0o755), None), (member("ckpt/manifest.json"), b"{}")],
                       tmp_path / "wrapped.tar")  # fmt: skip
    assert safe_extract(archive, tmp_path / "dest") == tmp_path / "dest" / "ckpt"


def test_packed_checkpoint_extracts(tmp_path: Path) -> None:
    archive = make_checkpoint(tmp_path, output="c.tar.gz")
    root = safe_extract(archive, tmp_path / "dest")
    assert (root / "manifest.json").is_file() and (root / "model.bin").is_file()


def test_unusable_archives(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar archive at all" * 100)
    with pytest.raises(CheckpointError, match=r"cannot extract junk.tar|not a tar archive"):
        safe_extract(tmp_path / "junk.tar", tmp_path / "a")
    no_manifest = tar_with([(member("model.bin"), b"x")], tmp_path / "nomanifest.tar")
    with pytest.raises(CheckpointError, match=r"holds no manifest.json"):
        safe_extract(no_manifest, tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"does not exist"):
        safe_extract(tmp_path / "missing.tar", tmp_path / "c")
    archive = make_checkpoint(tmp_path, output="c.tar.gz")
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot extract cut.tar.gz"):
        safe_extract(tmp_path / "cut.tar.gz", tmp_path / "d")


def test_archive_kind() -> None:
    assert archive_kind("a.tar") == "" and archive_kind("a.TAR.GZ") == "gz" and archive_kind("a.tgz") == "gz"
    assert archive_kind("a.zip") is None and archive_kind("dir") is None


# --- index_archive: read, hash and measure without writing ----------------------------------------


def test_index_gives_the_unpacked_size_and_the_whole_files_hash(tmp_path: Path) -> None:
    archive = tar_with([MANIFEST, (member("model.bin"), b"w" * 5000), (member("d", tarfile.DIRTYPE), None),
                        (member("link", tarfile.SYMTYPE, "model.bin"), None)], tmp_path / "ok.tar")  # fmt: skip
    with gzip.open(tmp_path / "ok.tar.gz", "wb") as packed:
        packed.write(archive.read_bytes())
    for path in (archive, tmp_path / "ok.tar.gz"):
        digest = hashlib.sha256()
        index = index_archive(path, digest=digest)
        assert (index.members, index.unpacked_bytes) == (4, 5002)  # the two regular files
        assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(tmp_path.iterdir()) == [archive, tmp_path / "ok.tar.gz"]  # nothing written


def test_index_limits_and_damaged_archives(tmp_path: Path) -> None:
    big = tar_with([MANIFEST, (member("model.bin"), b"x" * 5000)], tmp_path / "big.tar")
    with pytest.raises(UnsafeArchiveError, match=r"expands to more than 4096 bytes"):
        index_archive(big, max_bytes=4096)
    many = tar_with([MANIFEST, *[(member(f"f{i}"), b"x") for i in range(20)]], tmp_path / "many.tar")
    with pytest.raises(UnsafeArchiveError, match=r"more than 10 members"):
        index_archive(many, max_members=10)
    archive = make_checkpoint(tmp_path, output="c.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    digest = hashlib.sha256()
    with pytest.raises(CheckpointError, match=r"cannot read cut.tar.gz"):
        index_archive(cut, digest=digest)
    assert digest.hexdigest() == hashlib.sha256(cut.read_bytes()).hexdigest()  # hashed to the end anyway
