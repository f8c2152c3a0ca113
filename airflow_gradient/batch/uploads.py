"""Where a writer's part files go: straight to local disk, or uploaded to object storage in the
background, one at a time, in order.

:class:`PartFiles` is the one path both part formats (JSONL, Parquet) take. On local disk a part
is created exclusively and written directly. On object storage a part becomes visible when it is
written whole, so it is filled in memory and, once closed, handed to a :class:`PartUploader`.

Written by the task's writer, every upload stopped the batch: the workers that finished an item
waited for the part's upload before taking the next. :class:`PartUploader` uploads each finished
part's bytes from a thread of its own, while the writer goes on filling the next part in memory.
The queue is bounded (:data:`PARTS_IN_FLIGHT`): when the store is slower than the batch, the writer
waits for a free place, so memory stays bounded too. An upload error is raised by the next
hand-over or by :meth:`PartUploader.finish`.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import IO, TYPE_CHECKING

from airflow_gradient.batch.parts import local_path

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# Parts handed over and not uploaded yet: a hard kill loses these as well as the part still open.
PARTS_IN_FLIGHT = 2


class PartFiles:
    """The part files of one writer in ``folder``: opened, closed, and on object storage uploaded.

    ``local``: whether ``folder`` is on local disk (:func:`~airflow_gradient.batch.parts.is_local`).
    """

    def __init__(self, folder: ObjectStoragePath, local: bool) -> None:
        self.folder = folder
        self._uploads = None if local else PartUploader()

    def open(self, name: str) -> IO[bytes]:
        """A new part ``name`` to write bytes to. A local part is created with ``"x"``: a part that
        exists is never truncated (object stores have no exclusive create; there the writer's random
        id alone keeps names apart). It is opened directly: Airflow's wrapper around an
        ``ObjectStoragePath`` file costs microseconds per call."""
        if self._uploads is None:
            return open(local_path(self.folder / name), "xb")
        return io.BytesIO()

    def close(self, handle: IO[bytes], name: str) -> None:
        """Close part ``name``, written through ``handle``; on object storage, hand it to the uploader
        (it becomes visible once uploaded)."""
        if self._uploads is None:
            handle.close()
        else:
            assert isinstance(handle, io.BytesIO)  # open() made it
            self._uploads.submit(self.folder / name, handle.getvalue())

    def wait(self) -> None:
        """Wait until every part closed so far is uploaded, hence visible; raise an upload error."""
        if self._uploads is not None:
            self._uploads.wait()

    def finish(self) -> None:
        """Wait until every part closed is uploaded; raise the first upload error."""
        if self._uploads is not None:
            self._uploads.finish()


class PartUploader:
    """Uploads ``(path, data)`` parts in a background thread, in the order they are handed over."""

    def __init__(self) -> None:
        self._parts: queue.Queue[tuple[ObjectStoragePath, bytes] | None] = queue.Queue(maxsize=PARTS_IN_FLIGHT)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gradient-part-uploads", daemon=True)
        self._thread.start()

    def submit(self, path: ObjectStoragePath, data: bytes) -> None:
        """Hand a finished part over; waits while :data:`PARTS_IN_FLIGHT` parts are still uploading."""
        self._raise()
        self._parts.put((path, data))

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
                    path, data = part
                    with path.open("wb") as handle:
                        handle.write(data)
            except BaseException as exc:  # raised again in the writer's thread
                self._error = exc
            finally:
                self._parts.task_done()
