"""``python -m airflow_gradient.testing.emulator --port 8000 --latency 0.2 --rpm-limit 300 ...``

Every :class:`EmulatorConfig` field is a flag of the same name, dashes for underscores. Prints the
base URL, then serves until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import types
import typing
from collections.abc import Sequence
from typing import Any

from airflow_gradient.testing.emulator.config import EmulatorConfig
from airflow_gradient.testing.emulator.server import EmulatorServer
from airflow_gradient.testing.emulator.state import EmulatorState


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse options for a config field's type: ``int | None`` -> int, a Literal -> choices."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_kwargs(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return {"choices": args}
    if typing.get_origin(annotation) is typing.Annotated:
        return _flag_kwargs(args[0])
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": annotation if annotation in (int, float) else str}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_gradient.testing.emulator",
        description="Offline emulator of DigitalOcean Gradient serverless inference.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on, 0 for a free one (default: %(default)s)"
    )
    for name, field in EmulatorConfig.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
            help=f"{field.description} (default: {field.default})", **_flag_kwargs(field.annotation),
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = vars(build_parser().parse_args(argv))
    host, port = options.pop("host"), options.pop("port")
    config = EmulatorConfig(**options)
    server = EmulatorServer(EmulatorState(config), host, port)
    server.start()
    print(f"Gradient emulator serving {server.url}/v1 (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
