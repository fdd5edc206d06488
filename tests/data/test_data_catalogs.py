"""Dataset catalogs (KTH, CLEVRER, HMDB51, UCF101, video folders) on stand-ins in the real on-disk formats."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from videxp.data import clevrer, hmdb51, kth, standins, ucf101, video_folder
from videxp.video.decode import count_frames, decode_frames, probe


def _ids(records) -> list[str]:
    return [r.video_id for r in records]


def _check_common(records, split: str) -> None:
    assert records, "empty split"
    assert _ids(records) == sorted(_ids(records)) and len(set(_ids(records))) == len(records)
    for r in records:
        assert r.split == split and Path(r.path).is_absolute() and Path(r.path).is_file()


# ----------------------------------------------------------------------------- KTH


@pytest.fixture(scope="module")
def kth_root(tmp_path_factory) -> Path:
    return standins.write_kth(tmp_path_factory.mktemp("kth"))


def test_kth_prediction_protocol(kth_root):
    train, test, val = (kth.scan(kth_root, s) for s in ("train", "test", "val"))
    for records, split in ((train, "train"), (test, "test"), (val, "val")):
        _check_common(records, split)
    assert len(train) == len(test) == 2 * 6 * 2
    assert {r.meta["person"] for r in train} == {1, 2} and {r.meta["person"] for r in test} == {21, 22}
    assert _ids(val) == _ids(test)  # no validation split: val = test
    r = train[0]
    assert r.video_id == "person01_boxing_d1" and r.frame_range is None
    assert (r.label, r.class_name, r.meta) == (0, "boxing", {"person": 1, "scenario": 1})
    assert Path(r.path).name == "person01_boxing_d1_uncomp.avi"
    assert all(kth.CLASSES[r.label] == r.class_name == Path(r.path).parent.name for r in train + test)


def test_kth_official_protocol(kth_root):
    persons = {
        s: {r.meta["person"] for r in kth.scan(kth_root, s, protocol="official")} for s in ("val", "test")
    }
    assert persons == {"val": {1, 21}, "test": {2, 22}}
    assert kth.scan(kth_root, "train", protocol="official") == []  # persons 11-18 are not in the stand-in
    with pytest.raises(ValueError, match="protocol"):
        kth.scan(kth_root, "train", protocol="srvp")


def test_kth_sequences_segments(kth_root):
    seq = kth_root / "00sequences.txt"
    train = kth.scan(kth_root, "train", sequences=seq)
    test = kth.scan(kth_root, "test", sequences=seq)
    _check_common(train, "train")
    assert len(test) == 24 * 4 - 1  # one 3-segment line
    by_id = {r.video_id: r for r in train + test}
    assert by_id["person01_boxing_d1_s2"].frame_range == (15, 30)  # `16-30` 1-based inclusive
    assert by_id["person01_boxing_d1_s2"].meta == {"person": 1, "scenario": 1, "segment": 2}
    gapped = [by_id[f"{standins.KTH_GAPPED}_s{i}"].frame_range for i in range(1, 5)]
    assert gapped == [(0, 13), (18, 28), (33, 43), (48, 58)]
    three = [r.frame_range for r in test if r.video_id.startswith(standins.KTH_THREE_SEGMENTS)]
    assert three == [(0, 20), (20, 40), (40, 60)]
    r = by_id[f"{standins.KTH_GAPPED}_s2"]
    assert decode_frames(r.path, *r.frame_range).shape == (10, 120, 160, 3)


def test_kth_parse_real_sequences_format(tmp_path):
    text = (
        "\nThis database contains sequences of six classes of actions performed by\n"
        "Training:   person11, 12, 13, 14, 15, 16, 17, 18\n"
        "Test:       person22, 02, 03, 05, 06, 07, 08, 09, 10 \n\n\n"
        "person01_boxing_d1      frames  1-95, 96-185, 186-245, 246-360\n"
        "person01_jogging_d1     frames  1-50, 120-170, 250-300, 362-415\n"
        "person07_jogging_d4     frames  1-64, 270-332, 194-264, 490-570\r\n"
        "person11_boxing_d4          frames  1-106, 107-194, 195-250\n"
        "person13_handclapping_d3    *missing*\n"
        "person02_running_d2\tframes\t1-92, 110-192, 882-975, 1382-1492\n"
    )
    (tmp_path / "00sequences.txt").write_text(text)
    seq = kth.parse_sequences(tmp_path / "00sequences.txt")
    assert set(seq) == {
        "person01_boxing_d1",
        "person01_jogging_d1",
        "person07_jogging_d4",
        "person11_boxing_d4",
        "person02_running_d2",
    }
    assert seq["person01_boxing_d1"] == [(0, 95), (95, 185), (185, 245), (245, 360)]
    assert seq["person01_jogging_d1"] == [(0, 50), (119, 170), (249, 300), (361, 415)]
    assert seq["person07_jogging_d4"][1:3] == [(269, 332), (193, 264)]  # file order kept
    assert seq["person11_boxing_d4"] == [(0, 106), (106, 194), (194, 250)]
    assert seq["person02_running_d2"][-1] == (1381, 1492)
    (tmp_path / "bad.txt").write_text(text + "person03_boxing_d1      frames  1-95, 96-x\n")
    with pytest.raises(ValueError, match=r"bad\.txt:13: bad frame range"):
        kth.parse_sequences(tmp_path / "bad.txt")


def test_kth_missing_video_and_off_grammar_files(tmp_path, caplog):
    root = standins.write_kth(
        tmp_path / "kth", persons=(13,), actions=("handclapping",), scenarios=(3, 4), frames=8
    )
    folder = root / "handclapping"
    assert not (folder / "person13_handclapping_d3_uncomp.avi").exists()  # never in the real release
    for junk in ("person13_handclapping_d4.avi", "README.txt", "person13_boxing_d1_uncomp.avi"):
        (folder / junk).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="videxp.data.kth"):
        records = kth.scan(root, "train")
    assert _ids(records) == ["person13_handclapping_d4"]
    warned = caplog.text
    assert (
        "person13_handclapping_d4.avi" in warned and "README.txt" in warned and "person13_boxing_d1" in warned
    )
    assert "boxing is missing" in warned  # other action folders absent: warned, not silent


def test_kth_video_without_sequence_entry(tmp_path):
    root = standins.write_kth(tmp_path / "kth", persons=(3,), actions=("boxing",), scenarios=(1,), frames=8)
    (tmp_path / "seq.txt").write_text("person03_boxing_d2      frames  1-4, 5-8\n")
    with pytest.raises(ValueError, match="person03_boxing_d1"):
        kth.scan(root, "train", sequences=tmp_path / "seq.txt")
    with pytest.raises(FileNotFoundError, match="KTH"):
        kth.scan(tmp_path / "nowhere", "train")


# ----------------------------------------------------------------------------- CLEVRER


@pytest.fixture(scope="module")
def clevrer_root(tmp_path_factory) -> Path:
    return standins.write_clevrer(tmp_path_factory.mktemp("clevrer"), frames=8)


def test_clevrer_splits_from_buckets(clevrer_root):
    expected = {
        "train": ["video_00000", "video_00001"],
        "val": ["video_10000", "video_10001"],
        "test": ["video_15000"],
    }
    for split, ids in expected.items():
        records = clevrer.scan(clevrer_root, split)
        _check_common(records, split)
        assert _ids(records) == ids and all(r.label is None and r.class_name is None for r in records)
    path = Path(clevrer.scan(clevrer_root, "val")[0].path)
    assert path.parts[-3:] == ("video_validation", "video_10000-11000", "video_10000.mp4")
    info = probe(path)
    assert (info["width"], info["height"], info["fps"]) == (480, 320, 25.0)


def test_clevrer_flattened_and_mixed(clevrer_root, tmp_path):
    src = next((clevrer_root / "video_train").rglob("*.mp4"))
    shutil.copytree(clevrer_root / "video_train", tmp_path / "video_train")
    shutil.copy(src, tmp_path / "video_train" / "video_00428.mp4")
    assert _ids(clevrer.scan(tmp_path, "train")) == ["video_00000", "video_00001", "video_00428"]
    shutil.copy(src, tmp_path / "video_train" / "video_00001.mp4")  # also in its bucket
    with pytest.raises(ValueError, match="video 1 is also at"):
        clevrer.scan(tmp_path, "train")


def test_clevrer_wrong_bucket_and_wrong_split(clevrer_root, tmp_path):
    src = next((clevrer_root / "video_train").rglob("*.mp4"))
    (tmp_path / "a" / "video_train" / "video_01000-02000").mkdir(parents=True)
    shutil.copy(src, tmp_path / "a" / "video_train" / "video_01000-02000" / "video_00005.mp4")
    with pytest.raises(ValueError, match=r"video_00005\.mp4.*outside its bucket video_01000-02000"):
        clevrer.scan(tmp_path / "a", "train")
    (tmp_path / "b" / "video_train").mkdir(parents=True)
    shutil.copy(src, tmp_path / "b" / "video_train" / "video_10005.mp4")
    with pytest.raises(ValueError, match=r"video_10005\.mp4.*belongs to the val split"):
        clevrer.scan(tmp_path / "b", "train")
    with pytest.raises(FileNotFoundError, match="video_test.zip"):
        clevrer.scan(tmp_path / "b", "test")


# ----------------------------------------------------------------------------- HMDB51


@pytest.fixture(scope="module")
def hmdb_root(tmp_path_factory) -> Path:
    return standins.write_hmdb51(tmp_path_factory.mktemp("hmdb51"))


def test_hmdb51_fold1_tags_and_labels(hmdb_root):
    train, test, val = (hmdb51.scan(hmdb_root, s) for s in ("train", "test", "val"))
    for records, split in ((train, "train"), (test, "test"), (val, "val")):
        _check_common(records, split)
    assert [(r.class_name, r.label) for r in train] == [("brush_hair", 0), ("cartwheel", 1), ("wave", 2)]
    assert "cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_bad_0" in _ids(train)
    hostile = "brush_hair/Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_le_goo_1"
    assert hostile in _ids(test) and _ids(val) == _ids(test)  # no validation split: val = test
    assert all(r.meta == {"tag": 2, "fold": 1} for r in test)
    with_unused = hmdb51.scan(hmdb_root, "train", include_unused=True)
    assert len(with_unused) == 6 and {r.meta["tag"] for r in with_unused} == {0, 1}


def test_hmdb51_fold2_short_and_wide_clips(hmdb_root):
    train = hmdb51.scan(hmdb_root, "train", fold=2)  # the rotation puts each class's last clip in train
    assert [r.video_id[-2:] for r in train] == ["_2", "_2", "_2"] and all(r.meta["tag"] == 1 for r in train)
    short = [r for r in train if r.class_name == "brush_hair"][0]
    assert count_frames(short.path) == standins.HMDB51_SHORT < 45
    wide = [r for r in train if r.class_name == "wave"][0]
    info = probe(wide.path)
    assert (info["height"], info["width"], info["fps"]) == (*standins.HMDB51_WIDE, 30.0)


def test_hmdb51_crlf_and_sibling_splits_dir(hmdb_root, tmp_path):
    root = tmp_path / "hmdb51_org"
    shutil.copytree(hmdb_root, root, ignore=shutil.ignore_patterns(hmdb51.SPLITS_DIR))
    shutil.copytree(hmdb_root / hmdb51.SPLITS_DIR, tmp_path / hmdb51.SPLITS_DIR)
    split_file = tmp_path / hmdb51.SPLITS_DIR / "wave_test_split1.txt"
    split_file.write_bytes(split_file.read_bytes().replace(b"\n", b"\r\n"))
    assert _ids(hmdb51.scan(root, "test")) == _ids(hmdb51.scan(hmdb_root, "test"))


def test_hmdb51_listed_clip_missing(hmdb_root, tmp_path):
    shutil.copytree(hmdb_root, tmp_path / "h")
    (tmp_path / "h" / "cartwheel" / "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_bad_0.avi").unlink()
    with pytest.raises(FileNotFoundError, match=r"cartwheel_test_split1\.txt.*\(Rad\)Schlag_die_Bank!"):
        hmdb51.scan(tmp_path / "h", "train")


def test_hmdb51_nested_rar_error(tmp_path):
    root = standins.write_hmdb51(tmp_path / "rar", rar_placeholder=True)
    assert (root / "brush_hair.rar").is_file() and not (root / "brush_hair").exists()
    with pytest.raises(FileNotFoundError, match=r"brush_hair\.rar") as err:
        hmdb51.scan(root, "train")
    assert (
        "unrar x hmdb51_org.rar" in str(err.value) and "unar" in str(err.value) and "bsdtar" in str(err.value)
    )
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "hmdb51_org.rar").write_bytes(b"Rar!")
    with pytest.raises(FileNotFoundError, match="hmdb51_org.rar is not extracted"):
        hmdb51.scan(outer, "train")


def test_hmdb51_full_split_set_is_validated(hmdb_root, tmp_path, caplog):
    shutil.copytree(hmdb_root, tmp_path / "h")
    splits = tmp_path / "h" / hmdb51.SPLITS_DIR
    for i in range(153 - 9):  # pad the 9 stand-in files to a full set of 153
        (splits / f"other{i}_test_split{i % 3 + 1}.txt").write_text("")
    with caplog.at_level(logging.WARNING, logger="videxp.data.hmdb51"):
        hmdb51.scan(tmp_path / "h", "test")
    assert "brush_hair_test_split1.txt has 1 train / 1 test clips, expected 70 / 30" in caplog.text
    assert "3 class folders" in caplog.text


# ----------------------------------------------------------------------------- UCF101


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    return standins.write_ucf101(tmp_path_factory.mktemp("ucf101"))


def test_ucf101_class_list_is_the_real_one(ucf_root):
    assert len(ucf101.CLASSES) == 101 and ucf101.CLASSES[36] == "HandstandPushups"
    assert ucf101.CLASSES[0] == "ApplyEyeMakeup" and ucf101.CLASSES[-1] == "YoYo"
    raw = (ucf_root / "ucfTrainTestlist" / "classInd.txt").read_bytes()
    assert raw.count(b"\r\n") == 101 and b"37 HandstandPushups\r\n" in raw
    assert (ucf_root / "ucfTrainTestlist" / "testlist01.txt").read_bytes().endswith(b".avi\r\n")


def test_ucf101_fold1_labels_from_folder(ucf_root, caplog):
    with caplog.at_level(logging.WARNING, logger="videxp.data.ucf101"):
        train, test, val = (ucf101.scan(ucf_root, s) for s in ("train", "test", "val"))
    assert "not validated" in caplog.text  # partial lists: the 9537/3783 check is skipped, loudly
    for records, split in ((train, "train"), (test, "test"), (val, "val")):
        _check_common(records, split)
    assert len(train) == 8 and len(test) == 4 and _ids(val) == _ids(test)
    assert {r.meta["group"] for r in test} == {1} and {r.meta["group"] for r in train} == {8, 15}
    hsp = [r for r in test if r.class_name == "HandstandPushups"][0]
    assert hsp.video_id == "HandstandPushups/v_HandStandPushups_g01_c01"
    assert (hsp.label, hsp.meta) == (36, {"group": 1, "clip": 1})
    assert {r.class_name: r.label for r in train} == {
        "ApplyEyeMakeup": 0,
        "HandstandPushups": 36,
        "PlayingDaf": 59,
        "YoYo": 100,
    }
    assert {r.meta["group"] for r in ucf101.scan(ucf_root, "test", fold=3)} == {15}


def test_ucf101_short_clip_and_geometry(ucf_root):
    short = ucf101.scan(ucf_root, "train")[-1]
    assert short.video_id == "YoYo/v_YoYo_g15_c01"
    assert count_frames(short.path) == standins.UCF101_SHORT_FRAMES <= 29
    info = probe(short.path)
    assert (info["width"], info["height"], info["fps"], info["codec"]) == (320, 240, 25.0, "mpeg4")


def test_ucf101_flat_root_and_list_errors(ucf_root, tmp_path):
    shutil.copytree(ucf_root / "UCF-101", tmp_path / "flat")
    flat = ucf101.scan(tmp_path / "flat", "test", lists_dir=ucf_root / "ucfTrainTestlist")
    assert _ids(flat) == _ids(ucf101.scan(ucf_root, "test"))
    lists = tmp_path / "lists"
    shutil.copytree(ucf_root / "ucfTrainTestlist", lists)
    train = lists / "trainlist01.txt"
    good = train.read_bytes()
    train.write_bytes(good.replace(b"v_YoYo_g08_c01.avi 101", b"v_YoYo_g08_c01.avi 100"))
    with pytest.raises(ValueError, match=r"trainlist01\.txt:\d+: label 100"):
        ucf101.scan(ucf_root, "train", lists_dir=lists)
    train.write_bytes(good + b"YoYo/v_YoYo_g25_c07.avi 101\r\n")
    with pytest.raises(FileNotFoundError, match=r"trainlist01\.txt:9 lists YoYo/v_YoYo_g25_c07\.avi"):
        ucf101.scan(ucf_root, "train", lists_dir=lists)
    with pytest.raises(FileNotFoundError, match="UCF101TrainTestSplits"):
        ucf101.scan(tmp_path / "flat", "train")


# ----------------------------------------------------------------------------- video folder


@pytest.fixture
def folder_root(tmp_path) -> Path:
    for rel in (
        "walk/a.mp4",
        "walk/b.avi",
        "run/sub/c.MKV",
        "run/d.gif",
        "e.npy",
        ".hidden.mp4",
        "notes.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    return tmp_path


def test_video_folder_labels_and_default_splits(folder_root):
    records = video_folder.scan(folder_root, "train")
    _check_common(records, "train")
    assert [(r.video_id, r.label, r.class_name) for r in records] == [
        ("e", None, None),
        ("run/d", 0, "run"),
        ("run/sub/c", 0, "run"),
        ("walk/a", 1, "walk"),
        ("walk/b", 1, "walk"),
    ]
    for split in ("val", "test"):  # no lists, no held-out fraction: every split is the full list
        assert _ids(video_folder.scan(folder_root, split)) == _ids(records)


def test_video_folder_val_fraction_is_seeded_and_disjoint(folder_root):
    def ids(split, seed=0):
        return set(_ids(video_folder.scan(folder_root, split, val_fraction=0.4, seed=seed)))

    assert len(ids("val")) == 2 and ids("val") == ids("test") and not ids("val") & ids("train")
    assert ids("val") | ids("train") == set(_ids(video_folder.scan(folder_root, "train")))
    assert ids("val") == ids("val") and any(ids("val", s) != ids("val") for s in range(1, 6))


def test_video_folder_split_lists(folder_root):
    (folder_root / "train.txt").write_text("walk/a.mp4\r\nrun/sub/c.MKV\n\n# comment\n")
    (folder_root / "test.txt").write_text("e.npy\n")
    lists = {"train": folder_root / "train.txt", "test": folder_root / "test.txt"}
    assert _ids(video_folder.scan(folder_root, "train", split_lists=lists)) == ["run/sub/c", "walk/a"]
    assert _ids(video_folder.scan(folder_root, "val", split_lists=lists)) == ["e"]  # val falls back to test
    (folder_root / "test.txt").write_text("walk/zzz.mp4\n")
    with pytest.raises(FileNotFoundError, match=r"test\.txt:1 lists 'walk/zzz\.mp4'"):
        video_folder.scan(folder_root, "test", split_lists=lists)


def test_video_folder_duplicate_ids_and_empty(folder_root, tmp_path_factory):
    (folder_root / "walk" / "a.webm").write_bytes(b"")
    with pytest.raises(ValueError, match="walk/a"):
        video_folder.scan(folder_root, "train")
    with pytest.raises(FileNotFoundError, match="no video files"):
        video_folder.scan(tmp_path_factory.mktemp("empty"), "train")
