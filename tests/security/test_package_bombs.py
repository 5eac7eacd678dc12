"""A package cannot make its reader write more than it sent (issue 14, item 3).

A 0.9 MB upload with GNU sparse members once made the market write 3.2 GB to its temp folder
before refusing it. Now every header is checked before any byte is written (sparse, device,
link and folder members are refused), the manifest is read alone, and the other members must
be the files it lists, of the sizes it declares, before they are extracted.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from lmdock.common.errors import IntegrityError, InvalidArgument
from lmdock.common.package_reader import unpack_package

from tests.helpers import cluster_spec, make_adapter, make_package, rewrite_tar, tar_member

GIB = 1024**3


@pytest.fixture()
def package(tmp_path: Path, tiny_bert: Path, profile) -> Path:
    from lmdock.common.signing import generate_key

    adapter = make_adapter(tiny_bert, tmp_path / "adapter")
    out = tmp_path / "pkg.tar"
    make_package(out, adapter, key=generate_key(), spec=cluster_spec(profile, 1), base_model="b")
    return out


def _written(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse member")
def test_a_sparse_member_is_refused_before_it_expands(package: Path, tmp_path: Path) -> None:
    """A real GNU sparse member: 1 GiB of holes in a few KiB of tar, beside a valid manifest."""
    work = tmp_path / "bomb"
    work.mkdir()
    with tarfile.open(package) as tar:
        tar.extract("manifest.json", work, filter="data")
    hole = work / "adapter_model.safetensors"
    with hole.open("wb") as out:
        out.truncate(GIB)
    bomb = tmp_path / "bomb.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-cf", str(bomb), "-C", str(work), "manifest.json", hole.name],
        check=True,
    )
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(InvalidArgument, match="sparse"):
        unpack_package(bomb, tmp_path / "cache" / "lw")
    assert _written(tmp_path / "cache") == 0


@pytest.mark.parametrize(
    ("kind", "message"),
    [(tarfile.CHRTYPE, "not a regular file"), (tarfile.FIFOTYPE, "not a regular file")],
)
def test_device_and_fifo_members_are_refused(
    package: Path, tmp_path: Path, kind: bytes, message: str
) -> None:
    bad = rewrite_tar(package, tmp_path / "bad.tar", add=[(tar_member("adapter.json", kind), None)])
    with pytest.raises(InvalidArgument, match=message):
        unpack_package(bad, tmp_path / "out")


def test_sizes_the_manifest_does_not_declare_are_refused_before_extraction(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member larger than the manifest says is refused on its header, not after it is written."""
    with tarfile.open(package) as tar:
        weights = tar.extractfile("adapter_model.safetensors").read()  # type: ignore[union-attr]
    bad = rewrite_tar(package, tmp_path / "bad.tar", change={"adapter_model.safetensors": weights * 4})
    written: list[str] = []
    real_open = Path.open

    def recording_open(self: Path, mode: str = "r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "x" in mode:
            written.append(self.name)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", recording_open)
    with pytest.raises(IntegrityError, match="the manifest declares"):
        unpack_package(bad, tmp_path / "out")
    assert written == []  # not even the manifest: every size is checked before a file is written
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unpack-")]


def test_members_claiming_more_than_the_archive_holds_are_refused(package: Path, tmp_path: Path) -> None:
    """A header (with a valid checksum) that claims 1 GiB in a small archive: refused, nothing written."""
    raw = bytearray(package.read_bytes())
    with tarfile.open(package) as tar:
        offset = tar.getmember("adapter_model.safetensors").offset
    header = raw[offset : offset + 512]
    header[124:136] = f"{GIB:011o}\0".encode()  # the size field, octal
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    raw[offset : offset + 512] = header
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InvalidArgument, match="not a valid uncompressed tar"):
        unpack_package(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
