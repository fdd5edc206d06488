"""Dataset archives: verified downloads from a local HTTP server, safe zip extraction, RAR manual steps."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import pytest
from conftest import LocalServer

from videxp.data import archives
from videxp.data import download as dl
from videxp.data.download import (
    Archive,
    DatasetArchiveError,
    DatasetChecksumError,
    DatasetDownloadError,
    ManualStepsRequired,
    download_dataset,
)
from videxp.weights import registry as weights


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


AVI_A = b"fake avi one\n" * 40
AVI_B = b"fake avi two\n" * 30
RAR_BYTES = b"Rar!\x1a\x07\x00" + b"not really a rar archive\n" * 20


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


BOXING = _zip({"person01_boxing_d1_uncomp.avi": AVI_A, "person02_boxing_d1_uncomp.avi": AVI_B})
BOXING_MD5 = hashlib.md5(BOXING).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch, local_server) -> LocalServer:
    monkeypatch.delenv("VIDEXP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    monkeypatch.setattr(weights, "DOWNLOAD_TIMEOUT_S", 5.0)
    www = tmp_path / "www"
    www.mkdir()
    (www / "boxing.zip").write_bytes(BOXING)
    (www / "evil.zip").write_bytes(_zip({"ok.txt": b"fine", "../evil.txt": b"escaped"}))
    (www / "video_train.zip").write_bytes(_zip({"video_train/video_00000-01000/video_00007.mp4": b"mp4"}))
    (www / "splits.zip").write_bytes(_zip({"ucfTrainTestlist/classInd.txt": b"1 ApplyEyeMakeup\r\n"}))
    (www / "UCF101.rar").write_bytes(RAR_BYTES)
    (www / "hmdb51_org.rar").write_bytes(RAR_BYTES)
    (www / "page.zip").write_bytes(b"<html>moved</html>")
    return local_server(www, truncated=BOXING)


def _boxing(server: LocalServer, **kw) -> Archive:
    fields = {
        "url": f"{server.base}/boxing.zip",
        "filename": "boxing.zip",
        "md5": BOXING_MD5,
        "into": "boxing",
    }
    return Archive(**(fields | kw))


def test_download_verify_extract_and_rerun(server, tmp_path):
    raw = tmp_path / "raw"
    assert download_dataset("kth", raw, archives=[_boxing(server)]) == raw.resolve()
    assert (raw / "boxing" / "person01_boxing_d1_uncomp.avi").read_bytes() == AVI_A
    assert (raw / "boxing" / "person02_boxing_d1_uncomp.avi").read_bytes() == AVI_B
    assert (raw / "archives" / "boxing.zip").read_bytes() == BOXING
    assert (raw / "archives" / "boxing.zip.extracted").is_file()
    assert (raw / "boxing").stat().st_mode & 0o055 == 0o055 & ~_umask()  # not left 0700 by mkdtemp
    assert sorted(p.name for p in raw.iterdir()) == ["archives", "boxing"]  # no temp folders left
    assert server.hits == {"/boxing.zip": 1}

    download_dataset("kth", raw, archives=[_boxing(server)])  # rerun: nothing to do
    assert server.hits == {"/boxing.zip": 1}

    # An interrupted extraction (no marker) is redone from the verified archive, without a request.
    (raw / "archives" / "boxing.zip.extracted").unlink()
    (raw / "boxing" / "person02_boxing_d1_uncomp.avi").unlink()
    download_dataset("kth", raw, archives=[_boxing(server)])
    assert (raw / "boxing" / "person02_boxing_d1_uncomp.avi").read_bytes() == AVI_B
    assert server.hits == {"/boxing.zip": 1}


def test_top_folder_not_doubled(server, tmp_path):
    raw = tmp_path / "raw"
    archives = [
        Archive(url=f"{server.base}/video_train.zip", filename="video_train.zip", into="video_train"),
        Archive(url=f"{server.base}/splits.zip", filename="splits.zip", into="ucfTrainTestlist"),
    ]
    download_dataset("x", raw, archives=archives)
    assert (raw / "video_train" / "video_00000-01000" / "video_00007.mp4").read_bytes() == b"mp4"
    assert (raw / "ucfTrainTestlist" / "classInd.txt").is_file()


def test_wrong_md5_names_both_digests(server, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(DatasetChecksumError) as info:
        download_dataset("kth", raw, archives=[_boxing(server, md5="0" * 32)])
    msg = str(info.value)
    assert "0" * 32 in msg and BOXING_MD5 in msg
    assert f"{server.base}/boxing.zip" in msg and "boxing.zip" in msg
    assert not (raw / "archives" / "boxing.zip").exists() and not (raw / "boxing").exists()


def test_present_file_with_wrong_md5_is_set_aside(server, tmp_path):
    raw = tmp_path / "raw"
    (raw / "archives").mkdir(parents=True)
    (raw / "archives" / "boxing.zip").write_bytes(b"garbage")
    with pytest.raises(DatasetChecksumError, match=BOXING_MD5) as info:
        download_dataset("kth", raw, archives=[_boxing(server)])
    assert "corrupt" in str(info.value)
    assert not (raw / "archives" / "boxing.zip").exists()
    assert (raw / "archives" / "boxing.zip.corrupt").read_bytes() == b"garbage"
    assert server.hits == {}
    download_dataset("kth", raw, archives=[_boxing(server)])  # a rerun fetches a good copy
    assert (raw / "boxing" / "person01_boxing_d1_uncomp.avi").is_file()


def test_truncated_download(server, tmp_path):
    raw = tmp_path / "raw"
    archive = _boxing(server, url=f"{server.base}/truncated/boxing.zip")
    with pytest.raises(DatasetChecksumError) as info:
        download_dataset("kth", raw, archives=[archive])
    msg = str(info.value)
    assert "/truncated/boxing.zip" in msg and str(len(BOXING)) in msg
    assert sorted(p.name for p in (raw / "archives").iterdir() if p.name != ".lock") == []


def test_path_traversal_rejected(server, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(DatasetArchiveError, match=r"\.\./evil\.txt"):
        download_dataset("x", raw, archives=[Archive(url=f"{server.base}/evil.zip", filename="evil.zip")])
    assert not (tmp_path / "evil.txt").exists() and not (raw / "ok.txt").exists()
    assert not (raw / "archives" / "evil.zip.extracted").exists()
    assert not list(raw.glob(".videxp-extract-*"))


def test_offline_then_manual_placement(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEXP_OFFLINE", "1")
    raw = tmp_path / "raw"
    with pytest.raises(ManualStepsRequired) as info:
        download_dataset("kth", raw, archives=[_boxing(server)])
    assert not isinstance(info.value, DatasetDownloadError)
    msg = str(info.value)
    assert f"{server.base}/boxing.zip" in msg and str(raw.resolve() / "archives" / "boxing.zip") in msg
    assert "offline" in msg and BOXING_MD5 in msg and info.value.steps in msg
    (raw / "archives" / "boxing.zip").write_bytes(BOXING)  # placed by hand
    download_dataset("kth", raw, archives=[_boxing(server)])
    assert (raw / "boxing" / "person01_boxing_d1_uncomp.avi").is_file()
    assert server.hits == {}


def test_unpublished_checksum_recorded_then_enforced(server, tmp_path):
    raw = tmp_path / "raw"
    archive = _boxing(server, md5=None)
    download_dataset("kth", raw, archives=[archive], extract=False)
    ledger = json.loads((raw / "archives" / "checksums.json").read_text())
    assert ledger["boxing.zip"]["sha256"] == hashlib.sha256(BOXING).hexdigest()
    assert not (raw / "boxing").exists()  # extract=False
    other = _zip({"person03_boxing_d1_uncomp.avi": b"x"})
    (raw / "archives" / "boxing.zip").write_bytes(other)
    with pytest.raises(DatasetChecksumError, match="first use") as info:
        download_dataset("kth", raw, archives=[archive], extract=False)
    assert hashlib.sha256(BOXING).hexdigest() in str(info.value)
    assert hashlib.sha256(other).hexdigest() in str(info.value)


def test_error_page_instead_of_zip(server, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(DatasetArchiveError, match="not a zip"):
        download_dataset("x", raw, archives=[Archive(url=f"{server.base}/page.zip", filename="page.zip")])
    assert not (raw / "archives" / "page.zip").exists()
    ledger = raw / "archives" / "checksums.json"
    assert not ledger.exists() or "page.zip" not in json.loads(ledger.read_text())
    assert (raw / "archives" / "page.zip.corrupt").is_file()


def test_rar_gives_manual_steps(server, tmp_path):
    raw = tmp_path / "raw"
    archives = [
        Archive(
            url=f"{server.base}/hmdb51_org.rar",
            filename="hmdb51_org.rar",
            extract="rar",
            nested=True,
            done=("brush_hair", "wave"),
        ),
        Archive(url=f"{server.base}/UCF101.rar", filename="UCF101.rar", extract="rar", done=("UCF-101",)),
        _boxing(server),
    ]
    with pytest.raises(ManualStepsRequired) as info:
        download_dataset("mix", raw, archives=archives)
    steps = info.value.steps
    root = raw.resolve()
    assert f"unrar x {root / 'archives' / 'hmdb51_org.rar'} {root}/" in steps
    assert f"unrar x {root / 'archives' / 'UCF101.rar'} {root}/" in steps
    assert 'for f in *.rar; do unrar x "$f" ./' in steps
    assert "unar -D" in steps and "bsdtar -xf" in steps
    assert (raw / "boxing" / "person01_boxing_d1_uncomp.avi").is_file()  # everything else was done
    assert (raw / "archives" / "UCF101.rar").read_bytes() == RAR_BYTES
    for rel in ("brush_hair", "wave", "UCF-101"):  # the user followed the steps
        (raw / rel).mkdir()
    (raw / "archives" / "UCF101.rar").unlink()  # and deleted an archive: no need to fetch it again
    hits = dict(server.hits)
    download_dataset("mix", raw, archives=archives)
    assert server.hits == hits


def test_failed_download_and_mirror(server, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    missing = Archive(url=f"{server.base}/nope.zip", filename="nope.zip")
    with pytest.raises(DatasetDownloadError) as info:
        download_dataset("x", raw, archives=[missing, _boxing(server)])
    assert isinstance(info.value, ManualStepsRequired)
    assert f"{server.base}/nope.zip" in str(info.value) and "404" in str(info.value)
    assert (raw / "boxing").is_dir()

    monkeypatch.setenv(dl.MIRROR_ENV, f"{server.base}/")
    elsewhere = _boxing(server, url="http://unreachable.invalid/cvap/boxing.zip")
    download_dataset("kth", tmp_path / "raw2", archives=[elsewhere])
    assert (tmp_path / "raw2" / "boxing" / "person02_boxing_d1_uncomp.avi").is_file()


def test_registry():
    assert set(archives.ARCHIVES) == {"kth", "clevrer", "hmdb51", "ucf101"}
    assert [a.into for a in archives.ARCHIVES["kth"]] == list(archives.KTH_CLASSES)
    assert all(a.url.endswith(f"/{a.into}.zip") and a.md5 is None for a in archives.ARCHIVES["kth"])
    md5 = {a.filename: a.md5 for a in archives.ARCHIVES["clevrer"]}
    assert md5["video_train.zip"] == "8bcd8cda154e813ce009b2ee226abf7c"
    assert md5["video_validation.zip"] == "948abe8ec22083de11796919cbee36eb"
    assert md5["video_test.zip"] == "3cfa74a01e8527026a589343a4d1fd9e"
    assert {a.extract for a in archives.ARCHIVES["hmdb51"]} == {"rar"} and len(archives.HMDB51_CLASSES) == 51
    ucf = {a.filename: a for a in archives.ARCHIVES["ucf101"]}
    assert ucf["UCF101.rar"].extract == "rar"
    assert ucf["UCF101TrainTestSplits-RecognitionTask.zip"].into == "ucfTrainTestlist"
    with pytest.raises(KeyError, match="unknown dataset"):
        download_dataset("nope", "/tmp/unused")
    with pytest.raises(ValueError, match="relative"):
        Archive(url="http://x/a.zip", filename="a.zip", into="../up")
    with pytest.raises(ValueError, match="hex"):
        Archive(url="http://x/a.zip", filename="a.zip", md5="abc")
