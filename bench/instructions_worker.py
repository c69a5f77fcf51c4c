"""The measured process of the instructions part: one app, in-process, under callgrind.

    valgrind --tool=callgrind --instr-atstart=no --dump-before=getloadavg ... \\
        python -m bench.instructions_worker --app service --events 1000 --warmup 100 \\
        --manifest bench/out/instructions/service.json --breakdown --instrument

``bench/instructions.py`` starts it; see that module for the method. This process builds
the app as production does (the service from ``wsgi.py``'s ``app``, the baseline from
``bench.baseline_app.create_app()``), warms it up, then runs each measured *phase*: a
fixed stream of signed deliveries, each passed to the WSGI app as gunicorn passes a
request (an environ with the body in ``wsgi.input``; the response is read and closed).

Every phase is bracketed by ``os.getloadavg()``, a C function nothing else here calls:
callgrind, run with ``--dump-before=getloadavg``, writes what was counted so far to a
file of its own each time, so phase *k* (0-based) is dump number ``2k + 2`` and nothing
outside a phase (start-up, imports, warm-up, signing, building the environs) is in it.

With ``--breakdown`` every phase is run a second time on a fresh stream of the same
shape with each feature's functions called through a *carrier* (``Carrier``): a ctypes
closure of the feature's own, entered from libc's ``bsearch``. Callgrind sees the
closure's trampoline as a function at a fixed address, so its inclusive count in the
profile is everything the feature's calls executed, in any thread.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bench import workload

MARK = os.getloadavg  # the phase boundary: callgrind --dump-before=getloadavg

# The features, in the order they are reported, and what each one wraps.
SERVICE_FEATURES = (
    ("verification", "WebhookVerifier.verify (svix Webhook.verify inside)"),
    ("parsing and mapping", "events.parse_event, the registry entry's subject check, map_clerk_user"),
    ("versioned write", "UserStore.upsert_if_newer, UserStore.delete"),
    (
        "event-log record",
        "the registry entry's keep, EventRecord(...), EventLog.record, EventLog._write (the batches)",
    ),
    ("metrics", "Metrics.delivery"),
    ("log line", "the handler's log.log(...) call (Logger.log, its handler and formatter)"),
)
BASELINE_FEATURES = (
    ("verification", "svix Webhook.verify"),
    ("parsing and mapping", "json.loads, mapped_fields"),
    ("versioned write", "Collection.update_one, Collection.delete_one (the guide's write)"),
)


class Carrier:
    """Calls a function through a ctypes closure of this carrier's own.

    libc's ``bsearch`` over a one-element array calls its comparison function once: the
    closure, which runs the pending call. (Callgrind does not see what libffi's call
    stub calls, straight from ctypes, as a call of its own; it does see bsearch's call.)
    Each carrier has its own closure, at its own address, which names it in the
    profile. The pending call travels as the search key (a Python object), so a carrier
    can be used from several threads. ``PyDLL`` keeps the GIL across the call, so
    wrapping a function does not give other threads a turn they would not have had.
    """

    _libc = ctypes.PyDLL(None)
    _compare_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p)
    _bsearch = _libc.bsearch
    _bsearch.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, _compare_type]
    _bsearch.restype = ctypes.c_void_p
    _element = (ctypes.c_long * 1)(0)

    def __init__(self, name: str) -> None:
        self.name = name
        self._closure = self._compare_type(self._run)
        self.address = ctypes.cast(self._closure, ctypes.c_void_p).value or 0

    @staticmethod
    def _run(call: Any, _element: Any) -> int:
        function, args, kwargs, out = call
        try:
            out.append((True, function(*args, **kwargs)))
        except BaseException as exc:  # re-raised by the caller, outside the C frames
            out.append((False, exc))
        return 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        bsearch, element, closure = self._bsearch, self._element, self._closure

        def carried(*args: Any, **kwargs: Any) -> Any:
            out: list[tuple[bool, Any]] = []
            bsearch((function, args, kwargs, out), element, 1, 8, closure)
            ok, value = out[0]
            if ok:
                return value
            raise value

        return carried


def _noop() -> None:
    return None


def instrumentation_on(timeout_s: float = 120.0) -> None:
    """Ask callgrind, through valgrind's gdbserver, to start instrumenting.

    The worker runs under ``--instr-atstart=no``: start-up, imports and the warm-up run
    about six times faster uninstrumented, and none of it is counted anyway. ``vgdb``
    sends the monitor command ``instrumentation on``; valgrind reads it between blocks
    of client code, so this process keeps running code (polls the vgdb process) until
    the command has been answered, rather than block in ``wait()``.
    """
    vgdb = shutil.which("vgdb")
    if vgdb is None:
        raise SystemExit("vgdb (part of valgrind) is not on PATH")
    command = subprocess.Popen(
        [vgdb, f"--pid={os.getpid()}", "instrumentation", "on"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    while command.poll() is None:
        if time.monotonic() > deadline:
            command.kill()
            raise SystemExit("vgdb did not switch callgrind's instrumentation on")
    output = command.stdout.read().decode(errors="replace") if command.stdout else ""
    if command.returncode != 0:
        raise SystemExit(f"vgdb failed ({command.returncode}): {output}")


def quiet_background() -> None:
    """Keep pymongo's clock-driven work out of the phases (in this process only).

    A client checks its server every 10 s (``heartbeatFrequencyMS``, about 0.9 million
    instructions each here) and runs its maintenance task every second. Neither is per
    delivery, and whether one falls inside a phase depends on how fast the machine ran
    it: with both pushed to an hour, none does. Both apps get the same client settings.
    """
    import pymongo.common

    pymongo.common.KILL_CURSOR_FREQUENCY = 3600
    uri = urlsplit(os.environ["MONGODB_URI"])
    query = parse_qsl(uri.query) + [("heartbeatFrequencyMS", "3600000")]
    os.environ["MONGODB_URI"] = urlunsplit(uri._replace(query=urlencode(query)))


class App:
    """An app as gunicorn would serve it, plus what the harness needs of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events = None
        self.wrapped = False
        if name == "service":
            import wsgi  # exactly what gunicorn imports: config from the environment, logging, app

            self.wsgi = wsgi.app
            from webhook_service.services import EXTENSION

            self.services = wsgi.app.extensions[EXTENSION]
            self.events = self.services.events
            # The event log's writer thread writes a batch whenever 100 records wait (a
            # busy service), and otherwise once a second. Here it writes nothing during a
            # phase: each phase ends with flush(), inside the phase, which writes the
            # phase's records in batches of 100 from this thread. The same batches, the
            # same work; what goes is what depended on timing: how many batches the
            # once-a-second timer cut, how many records the woken writer found waiting,
            # and the two threads taking the GIL from each other while it wrote.
            batch = self.events._batch_size
            self.events._interval = 86_400.0
            self.events._batch_size = 10**9
            self.events._max_batch = batch
        else:
            from bench.baseline_app import create_app

            self.wsgi = create_app()
            self.services = None

    def flush(self) -> None:
        if self.events is not None:
            self.events.flush()

    def hold_clock_driven_work(self) -> None:
        """After the warm-up: ``Metrics.delivery`` sets its last-delivery gauge at most
        once a second. That is a cost per second, not per delivery, and how many times a
        phase paid it depended on how fast the machine ran the phase (the metrics figure
        moved by 2.4 % between a loaded and a quiet run). It is not set in a phase."""
        if self.services is not None:
            self.services.metrics._last_delivery_set = float("inf")

    def wrap_features(self, carriers: dict[str, Carrier]) -> None:
        """Route each feature's functions through its carrier (this process only)."""
        self.wrapped = True
        if self.name == "service":
            import dataclasses

            from webhook_service import deliveries, dispatch
            from webhook_service.resources.users import handlers

            s = self.services
            c = carriers
            s.verifier.verify = c["verification"].wrap(s.verifier.verify)
            deliveries.parse_event = c["parsing and mapping"].wrap(deliveries.parse_event)
            handlers.map_clerk_user = c["parsing and mapping"].wrap(handlers.map_clerk_user)
            table = dispatch.EVENT_TYPES
            assert isinstance(table, dict)
            for name, entry in list(table.items()):
                table[name] = dataclasses.replace(
                    entry,
                    subject=c["parsing and mapping"].wrap(entry.subject),
                    keep=c["event-log record"].wrap(entry.keep),
                )
            users = s.stores.users
            users.upsert_if_newer = c["versioned write"].wrap(users.upsert_if_newer)
            users.delete = c["versioned write"].wrap(users.delete)
            deliveries.EventRecord = c["event-log record"].wrap(deliveries.EventRecord)
            s.events.record = c["event-log record"].wrap(s.events.record)
            s.events._write = c["event-log record"].wrap(s.events._write)
            s.metrics.delivery = c["metrics"].wrap(s.metrics.delivery)
            deliveries.log.log = c["log line"].wrap(deliveries.log.log)  # type: ignore[method-assign]
        else:
            import json as json_module
            import types

            from pymongo.collection import Collection
            from svix.webhooks import Webhook

            from bench import baseline_app

            c = carriers
            Webhook.verify = c["verification"].wrap(Webhook.verify)  # type: ignore[method-assign]
            baseline_app.json = types.SimpleNamespace(  # type: ignore[assignment]
                loads=c["parsing and mapping"].wrap(json_module.loads)
            )
            baseline_app.mapped_fields = c["parsing and mapping"].wrap(baseline_app.mapped_fields)
            Collection.update_one = c["versioned write"].wrap(Collection.update_one)  # type: ignore[method-assign]
            Collection.delete_one = c["versioned write"].wrap(Collection.delete_one)  # type: ignore[method-assign]


def environ(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """What gunicorn hands the app for the load generator's request (bench/loadgen.py:
    http.client adds Host, Accept-Encoding and Content-Length to the Svix headers)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": workload.WEBHOOK_PATH,
        "RAW_URI": workload.WEBHOOK_PATH,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gunicorn",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT_ENCODING": "identity",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        env[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    return env


def signed_environs(stream: workload.Stream, secret: str) -> list[dict[str, Any]]:
    at = datetime.now(UTC) + workload.SIGN_AHEAD
    return [environ(body, headers) for body, headers in workload.sign(stream, secret, at)]


def deliver(app: App, environs: Iterable[dict[str, Any]]) -> tuple[list[str], list[bytes]]:
    """Each request as gunicorn's worker serves it: call, read the body, close."""
    statuses: list[str] = []
    bodies: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return bodies.append

    wsgi = app.wsgi
    for env in environs:
        result = wsgi(env, start_response)
        try:
            bodies.append(b"".join(result))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return statuses, bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions_worker")
    parser.add_argument("--app", choices=("service", "baseline"), required=True)
    parser.add_argument("--events", type=int, required=True, help="deliveries per phase")
    parser.add_argument("--warmup", type=int, required=True, help="deliveries before the first phase")
    parser.add_argument("--breakdown", action="store_true", help="also the per-feature phases")
    parser.add_argument("--calibration-calls", type=int, default=200)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="switch callgrind's instrumentation on before the first phase (valgrind --instr-atstart=no)",
    )
    args = parser.parse_args(argv)
    from tests.support.signing import TEST_SECRET

    began = time.monotonic()
    quiet_background()
    app = App(args.app)
    features = SERVICE_FEATURES if args.app == "service" else BASELINE_FEATURES
    carriers = {name: Carrier(name) for name, _ in features}
    calibration = Carrier("calibration")

    # Warm-up: indexes, lazy imports, caches, the specialising interpreter, every
    # outcome's metric child, the event log's batches: a mixed stream and updates.
    warm = workload.materialize(workload.build_template(args.warmup, seed=99), "iw")
    for stream in (warm, workload.update_stream(warm, max(1, args.warmup // 2))):
        statuses, _ = deliver(app, signed_environs(stream, TEST_SECRET))
        if set(statuses) != {"200 OK"}:
            raise SystemExit(f"warm-up: {Counter(statuses)}")
    app.flush()
    app.hold_clock_driven_work()

    templates = {
        "mixed": workload.build_template(args.events),
        "realistic": workload.build_template(args.events, **workload.REALISTIC),
    }
    phases: list[dict[str, Any]] = []

    def phase(kind: str, stream: workload.Stream, wrapped: bool) -> None:
        environs = signed_environs(stream, TEST_SECRET)
        gc.collect()
        gc.freeze()  # a full collection's cost over start-up's objects is not a delivery's
        started = time.monotonic()
        MARK()
        statuses, bodies = deliver(app, environs)
        app.flush()
        MARK()
        seconds = time.monotonic() - started
        outcomes = Counter(json.loads(b).get("outcome", "?") for b in bodies if b.startswith(b"{"))
        phases.append(
            {
                "kind": kind,
                "wrapped": wrapped,
                "events": len(environs),
                "statuses": dict(Counter(statuses)),
                "outcomes": dict(outcomes),
                "seconds": round(seconds, 1),
            }
        )
        print(f"{args.app} {kind}{' (features)' if wrapped else ''}: {len(environs)} in {seconds:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip

    planned: list[tuple[str, workload.Stream, bool]] = []
    for wrapped in (False, True) if args.breakdown else (False,):
        tag = "j" if wrapped else "i"  # same length: the same payload sizes in both
        mixed = workload.materialize(templates["mixed"], f"{tag}m")
        planned += [
            ("mixed", mixed, wrapped),
            ("updates", workload.update_stream(mixed, args.events), wrapped),
            ("realistic", workload.materialize(templates["realistic"], f"{tag}r"), wrapped),
        ]
    if args.instrument:
        instrumentation_on()
    for kind, stream, wrapped in planned:
        if wrapped and not app.wrapped:
            app.wrap_features(carriers)
        phase(kind, stream, wrapped)

    if args.breakdown:
        # What a carrier adds to the inclusive count of each call it carries.
        noop = calibration.wrap(_noop)
        gc.collect()
        gc.freeze()
        MARK()
        for _ in range(args.calibration_calls):
            noop()
        MARK()
        phases.append({"kind": "calibration", "wrapped": True, "events": args.calibration_calls})

    args.manifest.write_text(
        json.dumps(
            {
                "app": args.app,
                "pid": os.getpid(),
                "phases": phases,
                "features": [
                    {"name": name, "wraps": wraps, "address": f"0x{carriers[name].address:016x}"}
                    for name, wraps in features
                ],
                "calibration": f"0x{calibration.address:016x}",
                "seconds": round(time.monotonic() - began, 1),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
