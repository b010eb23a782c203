"""Uploading an export folder to the Hugging Face Hub (`fishertune export --out DIR --push-to-hub REPO`).

The folder goes up as it is (the model card's metadata header included), so `load_pretrained(REPO)` loads
it back. The token is huggingface_hub's own (`huggingface-cli login` or HF_TOKEN); nothing here stores it.
"""

from __future__ import annotations

from pathlib import Path

from fishertune.errors import InputError


def check_repo_id(repo_id: str) -> None:
    """A Hub model id ("owner/name" or "name"), checked before any work: one InputError line otherwise."""
    # network client (huggingface_hub): imported only when something goes to the Hub
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        reason = str(error).splitlines()[0]
        raise InputError(f"--push-to-hub {repo_id!r} is not a Hub repo id: {reason}") from None


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Create the model repo if it does not exist and upload `folder` to it in one commit; returns the
    commit's URL. Any failure of the Hub (network, offline mode, authentication, permission) is one
    InputError line that says the folder itself is complete."""
    from huggingface_hub import HfApi  # network client: imported only when something goes to the Hub

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message="Upload a FisherTune export")
    except Exception as error:  # huggingface_hub's HTTP, offline and validation errors have no common base
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        later = f"`huggingface-cli upload {repo_id} {folder}`"
        raise InputError(f"cannot push {folder} to the Hub as {repo_id} ({reason}); the export folder is "
                         f"complete: upload it later with {later}") from None
    return str(getattr(commit, "commit_url", commit))
