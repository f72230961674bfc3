"""`kexp data fetch`: downloads are kept only when their SHA-256 matches (file:// URLs stand in for the web)."""

import hashlib
import io
import zipfile

import pytest

from kexp import fetch as fetch_module
from kexp.errors import DataError
from kexp.events import discard as QUIET
from kexp.fetch import Source, download, fetch


def test_download_keeps_file_with_matching_checksum(tmp_path):
    src = tmp_path / "src.csv"
    src.write_bytes(b"1,2,3\n")
    target = tmp_path / "data" / "x.csv"
    download(src.as_uri(), hashlib.sha256(b"1,2,3\n").hexdigest(), target, QUIET)
    assert target.read_bytes() == b"1,2,3\n"
    assert [p.name for p in target.parent.iterdir()] == ["x.csv"]  # no temporary left behind


def test_download_reports_its_progress_as_events_and_draws_nothing(tmp_path, capsys):
    """The library emits; kexp.cli.display.DownloadBars draws the bar (kexp data fetch)."""
    src = tmp_path / "src.csv"
    src.write_bytes(b"1,2,3\n" * 30_000)
    events = []
    download(src.as_uri(), hashlib.sha256(src.read_bytes()).hexdigest(), tmp_path / "x.csv", lambda kind, **fields: events.append((kind, fields)))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "download_started" and kinds[-1] == "download_ended" and set(kinds[1:-1]) == {"download_progress"}
    assert events[0][1]["total"] == 180_000 and sum(f["bytes"] for k, f in events if k == "download_progress") == 180_000
    assert capsys.readouterr() == ("", "")


def test_download_bars_show_a_file_and_close_before_the_error(tmp_path):
    from rich.console import Console

    from kexp.cli.display import DownloadBars

    out = io.StringIO()
    src = tmp_path / "src.csv"
    src.write_bytes(b"tampered")
    with pytest.raises(DataError):
        download(src.as_uri(), "0000", tmp_path / "x.csv", DownloadBars(Console(file=out, width=80)))
    assert out.getvalue().startswith("x.csv ") and "8/8 bytes" in out.getvalue()


def test_download_with_wrong_checksum_is_discarded(tmp_path):
    src = tmp_path / "src.csv"
    src.write_bytes(b"tampered")
    target = tmp_path / "data" / "x.csv"
    with pytest.raises(DataError, match="SHA-256 is .* expected 0000; the download was discarded"):
        download(src.as_uri(), "0000", target, QUIET)
    assert list(target.parent.iterdir()) == []


def test_unreachable_url_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="download failed: .* copy the file to"):
        download((tmp_path / "missing.bin").as_uri(), "0", tmp_path / "x.bin", QUIET)


def test_fetch_extracts_zip_member_and_skips_verified_files(tmp_path, monkeypatch):
    archive = tmp_path / "sms.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SMSSpamCollection", "ham\thello\n")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch_module.SOURCES, "sms_spam", [Source(archive.as_uri(), digest, "sms/sms.zip", "SMSSpamCollection", "sms/SMSSpamCollection")])
    data_dir = tmp_path / "data"
    [path] = fetch("sms_spam", data_dir, QUIET)
    assert path.read_text() == "ham\thello\n"
    archive.unlink()  # already present and verified: no second download
    assert fetch("sms_spam", data_dir, QUIET) == [path]


def test_unknown_name_lists_known():
    with pytest.raises(DataError, match="no download source for 'cifar'; known: imdb, mnist, pima, sms_spam"):
        fetch("cifar", None, QUIET)
