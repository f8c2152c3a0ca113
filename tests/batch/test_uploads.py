"""Parts uploaded in the background: every part lands whole and in order, and an upload error is
raised in the writer's thread instead of being lost with the thread."""

from __future__ import annotations

import pytest

from airflow.sdk import ObjectStoragePath
from airflow_gradient.batch.uploads import PARTS_IN_FLIGHT, PartUploader


def test_every_part_handed_over_is_uploaded_whole(tmp_path) -> None:
    uploader = PartUploader()
    texts = {f"part-{n}.jsonl": f'{{"custom_id": "{n}"}}\n' * 100 for n in range(PARTS_IN_FLIGHT * 3)}
    for name, text in texts.items():
        uploader.submit(ObjectStoragePath(str(tmp_path / name)), text.encode())
    uploader.finish()
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == texts


def test_an_upload_error_is_raised_by_finish_and_later_parts_are_not_uploaded(tmp_path) -> None:
    uploader = PartUploader()
    uploader.submit(ObjectStoragePath(str(tmp_path / "missing-folder" / "part-0.jsonl")), b"row\n")
    uploader.submit(ObjectStoragePath(str(tmp_path / "part-1.jsonl")), b"row\n")
    with pytest.raises(FileNotFoundError):
        uploader.finish()
    assert not (tmp_path / "part-1.jsonl").exists()
    with pytest.raises(FileNotFoundError):  # and by every hand-over after it
        uploader.submit(ObjectStoragePath(str(tmp_path / "part-2.jsonl")), b"row\n")
