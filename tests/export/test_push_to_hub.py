"""`fishertune export --push-to-hub`: the export folder goes up as it is, through huggingface_hub's HfApi.

No network here: HfApi's two calls are replaced by recorders (huggingface_hub's own transport is not
exercised), so these tests check what we ask the Hub for and how failures read, not the upload itself."""

from pathlib import Path

import pytest
from export_helpers import train_run
from huggingface_hub import HfApi

from fishertune.cli.main import main


@pytest.fixture
def hub(monkeypatch):
    calls = []

    def create_repo(self, repo_id, **options):
        calls.append(("create_repo", repo_id, options))

    def upload_folder(self, **options):
        calls.append(("upload_folder", options["repo_id"], options))
        files = sorted(p.name for p in Path(options["folder_path"]).iterdir())
        calls.append(("files", files))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{options['repo_id']}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_export_pushes_its_folder_to_the_repo(hub, scenes, base_file, tmp_path, capsys):
    run = train_run(tmp_path, scenes, "fishertune", base_file)
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out), "--push-to-hub", "me/tiny-export", "--private"]) == 0
    (kind, repo, options), (upload, repo2, upload_options), (_, files) = hub
    assert (kind, repo, options) == ("create_repo", "me/tiny-export",
                                     {"repo_type": "model", "private": True, "exist_ok": True})
    assert upload == "upload_folder" and repo2 == "me/tiny-export"
    assert upload_options["folder_path"] == str(out) and upload_options["repo_type"] == "model"
    assert files == sorted(p.name for p in out.iterdir()) and "README.md" in files
    assert "pushed" in capsys.readouterr().out


def test_a_bad_repo_id_is_refused_before_any_work(hub, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "no-run"), "--out", str(out), "--push-to-hub", "bad repo!"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Hub repo id" in err[0] and not out.exists() and hub == []
    assert main(["export", str(tmp_path / "no-run"), "--onnx", str(tmp_path / "m.onnx"),
                 "--push-to-hub", "me/x"]) == 2
    assert "give --out DIR too" in capsys.readouterr().err


def test_a_failed_upload_is_one_line_and_keeps_the_folder(monkeypatch, scenes, base_file, tmp_path, capsys):
    def offline(self, repo_id, **options):
        raise OSError("Cannot reach https://huggingface.co: offline mode is enabled.\nmore detail")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    run = train_run(tmp_path, scenes, "lora", base_file)
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out), "--push-to-hub", "me/tiny-export"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot push" in err[0] and "offline mode" in err[0]
    assert "huggingface-cli upload me/tiny-export" in err[0] and "Traceback" not in err[0]
    assert (out / "export.json").is_file()  # the export itself is complete
