"""Part files uploaded to object storage in the background, one at a time, in order.

On object storage a part becomes visible when it is written whole. Written by the task's
writer, every upload stopped the batch: rows are written one at a time, so the workers that
finished an item waited for the part's upload before taking the next. :class:`PartUploader`
takes each finished part's text and uploads it from a thread of its own, while the writer goes
on filling the next part in memory. The queue is bounded (:data:`PARTS_IN_FLIGHT`): when the
store is slower than the batch, the writer waits for a free place, so memory stays bounded too.
An upload error is raised by the next hand-over or by :meth:`PartUploader.finish`.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# Parts handed over and not uploaded yet: a hard kill loses these as well as the part still open.
PARTS_IN_FLIGHT = 2


class PartUploader:
    """Uploads ``(path, text)`` parts in a background thread, in the order they are handed over."""

    def __init__(self) -> None:
        self._parts: queue.Queue[tuple[ObjectStoragePath, str] | None] = queue.Queue(maxsize=PARTS_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gradient-part-uploads", daemon=True)
        self._thread.start()

    def submit(self, path: ObjectStoragePath, text: str) -> None:
        """Hand a finished part over; waits while :data:`PARTS_IN_FLIGHT` parts are still uploading."""
        self._raise()
        self._parts.put((path, text))

    def wait(self) -> None:
        """Wait until every part handed over so far is uploaded (visible); raise an upload error."""
        self._parts.join()
        self._raise()

    def finish(self) -> None:
        """Wait until every part handed over is uploaded; raise the first upload error."""
        if self._thread.is_alive():
            self._parts.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (part := self._parts.get()) is not None:
            try:
                if self._error is None:  # after the first error the batch fails: no more uploads
                    path, text = part
                    with path.open("w", encoding="utf-8") as handle:
                        handle.write(text)
            except BaseException as exc:  # raised again in the writer's thread
                self._error = exc
            finally:
                self._parts.task_done()
