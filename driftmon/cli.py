"""Command line: ``driftmon validate-config | replay | run | demo``.

Light to import: numpy, the config loader and the pipeline are imported where
they are used, so ``driftmon run`` installs its signal handlers within
milliseconds of starting (see :mod:`driftmon.service.process`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

from driftmon import __version__

if TYPE_CHECKING:
    from driftmon.config import Config
    from driftmon.detect.result import DriftResult

BATCH = 10_000  # lines per replay batch (driftmon.source.file.BATCH)


def _load(path: str) -> Config:
    from driftmon.config import ConfigError, load_config

    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        print(f"driftmon: invalid config: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _fmt(x: float | None, spec: str) -> str:
    from driftmon.detect.result import json_number

    v = json_number(x)
    return "-" if v is None else v if isinstance(v, str) else format(v, spec)


def _text_row(r: DriftResult) -> str:
    from driftmon.detect.result import rfc3339

    top = r.top_bins[0] if r.top_bins else None
    driver = f"{top.bin} {top.p_reference:.3f}->{top.p_current:.3f}" if top else "-"
    return (
        f"{rfc3339(r.window_end) or '-':24} {r.stream:12} {r.feature:14} {r.segment or '-':10} "
        f"{r.metric}={_fmt(r.divergence, '.4f'):>8} {r.unit:5} p={_fmt(r.p_value, '.2g'):>7} "
        f"n={r.n_current:>6}/{r.n_reference:<6} {r.state:17} {r.transition:8} {driver}"
    )


def _text_record(r: Any) -> str:
    """A monitor's record (interest_shift) as a text row."""
    from driftmon.detect.result import rfc3339

    top = r.top_bins[0] if r.top_bins else None
    driver = f"{top.bin} {top.p_reference:.3f}->{top.p_current:.3f}" if top else "-"
    return (f"{rfc3339(r.window_end) or '-':24} {r.stream:12} {r.kind:14} {r.entity[:10]:10} "
            f"kl={_fmt(r.divergence, '.4f'):>8} {r.unit:5} p={_fmt(r.p_value, '.2g'):>7} "
            f"n={r.n_current:>6}/{r.n_reference:<6} {'shifted':17} {'none':8} {driver}")


def replay(cfg: Config, source: str | None, fmt: str, streams: list[str] | None, flush: bool, out: IO[str],
           inputs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Run the daemon's exact pipeline over a JSON-lines file; print results.

    ``inputs``: ``[(stream, path)]``, one file per stream, merged by event time
    (:mod:`driftmon.source.merge`); the calibration monitors whose two streams are
    both given run too.  Otherwise ``source`` is one file fed to ``streams``."""
    from driftmon.detect.result import json_line
    from driftmon.monitors.calibration import monitors_for
    from driftmon.pipeline import StepOutput, StreamPipeline
    from driftmon.source.base import values_of
    from driftmon.source.file import FileSource
    from driftmon.source.merge import merged_chunks

    names = [n for n, _ in inputs] if inputs else streams or [cfg.streams[0].name]
    pipes = [StreamPipeline(cfg.stream(n)) for n in names]
    by_name = dict(zip(names, pipes))
    monitors = monitors_for(cfg, merged_input=True, streams=names) if inputs else []
    shifts = 0

    def emit_results(results: list[DriftResult]) -> None:
        for r in results:
            out.write(json_line(r.to_dict()).decode() if fmt == "json" else _text_row(r) + "\n")

    def emit(step: StepOutput) -> None:
        nonlocal shifts
        emit_results(step.results)
        for rec in step.records:  # stream monitors' records (interest_shift), after the aggregate rows
            out.write(json_line(rec.to_dict()).decode() if fmt == "json" else _text_record(rec) + "\n")
        shifts += len(step.records)

    if fmt == "text":
        out.write(f"{'window_end':24} {'stream':12} {'feature':14} {'segment':10} divergence     unit  p-value  "
                  f"n cur/ref     state             change   top bin (share before->after)\n")
    if inputs:
        for chunk in merged_chunks([(cfg.stream(n), path) for n, path in inputs], BATCH):
            for name, values in chunk:
                emit(by_name[name].process(values))
                for m in monitors:
                    if name in m.streams:
                        m.feed(name, m.prepare(name, values))
            for m in monitors:
                emit_results(m.advance())
    else:
        assert source is not None
        with FileSource(source, BATCH) as src:
            while batches := src.poll_batches():
                for lines in batches.values():
                    values = values_of(lines)
                    for p in pipes:
                        emit(p.process(values))
    if flush:
        for p in pipes:
            emit(p.flush())
        for m in monitors:
            emit_results(m.flush())
    rejected: Counter[str] = Counter()
    for p in pipes:
        rejected.update(p.rejected)
    summary: dict[str, Any] = {
        "events": sum(p.events for p in pipes) if inputs else pipes[0].events,
        "rejected": dict(sorted(rejected.items())),
        "late": sum(p.late for p in pipes),
        "windows": sum(p.windows_closed for p in pipes) + sum(m.windows_closed for m in monitors),
    }
    if any(p.monitors for p in pipes):  # (only then: the summary of other configs keeps its shape)
        summary["interest_shifts"] = shifts
    if monitors:
        summary["calibration"] = {m.cfg.name: dict(m.counts) for m in monitors}
    if fmt == "json":
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        out.write(f"summary: {summary['events']} events, {summary['windows']} windows closed, "
                  f"{summary['late']} late, rejected {summary['rejected'] or 'none'}\n")
        for name, counts in summary.get("calibration", {}).items():
            shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            out.write(f"calibration {name}: {shown or 'nothing read'}\n")
    return summary


def _inputs(cfg: Config, specs: list[str], path: str) -> list[tuple[str, str]]:
    """``--input STREAM=PATH`` arguments -> ``[(stream, path)]``, or exit 2 naming the problem."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not file:
            print(f"driftmon: --input expects STREAM=PATH, got {spec!r}", file=sys.stderr)
            raise SystemExit(2)
        if name not in {s.name for s in cfg.streams}:
            print(f"driftmon: no stream named {name!r} in {path}", file=sys.stderr)
            raise SystemExit(2)
        if any(name == n for n, _ in out):
            print(f"driftmon: --input {name}=... given twice", file=sys.stderr)
            raise SystemExit(2)
        out.append((name, file))
    if sum(f == "-" for _, f in out) > 1:
        print("driftmon: only one --input can read stdin (-)", file=sys.stderr)
        raise SystemExit(2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="driftmon", description="Streaming drift monitor for recommender systems.")
    ap.add_argument("--version", action="version", version=f"driftmon {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate-config", help="parse a config and print it (secrets redacted)")
    v.add_argument("file")
    r = sub.add_parser("replay", help="run the pipeline over a JSON-lines file or stdin")
    r.add_argument("-c", "--config", required=True)
    r.add_argument("input", nargs="?", help="events.jsonl, or - for stdin (or use --input)")
    r.add_argument("--input", dest="inputs", action="append", metavar="STREAM=PATH",
                   help="one file per stream, merged by event time (repeatable; runs the calibration "
                        "monitors whose streams are all given)")
    r.add_argument("--format", choices=("text", "json"), default="text")
    r.add_argument("--stream", action="append", help="stream(s) of the config to run (default: the first)")
    r.add_argument("--no-flush", action="store_true", help="do not close the windows still open at end of input")
    run = sub.add_parser("run", help="run the daemon (Kafka -> metrics, webhooks)")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--reset-state", action="store_true", help="discard an unreadable or incompatible checkpoint")
    d = sub.add_parser("demo", help="embedded broker + synthetic traffic + daemon + webhook sink")
    d.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    d.add_argument("--config", default=None, help="daemon config (default: config/demo.yaml shipped with driftmon)")
    d.add_argument("--http", default="127.0.0.1:9108", help="where /metrics listens")
    args = ap.parse_args(argv)

    if args.command == "validate-config":
        from driftmon.config import redacted

        cfg = _load(args.file)
        print(json.dumps(redacted(cfg), indent=2))
        for notice in cfg.notices:
            print(f"note: {notice}", file=sys.stderr)
        extra = f", {len(cfg.calibration)} calibration(s)" if cfg.calibration else ""
        print(f"ok: {len(cfg.streams)} stream(s), {sum(len(s.features) for s in cfg.streams)} feature(s){extra}",
              file=sys.stderr)
        return 0
    if args.command == "replay":
        cfg = _load(args.config)
        for notice in cfg.notices:
            print(f"driftmon: note: {notice}", file=sys.stderr)
        if (args.input is None) == (not args.inputs) or (args.inputs and args.stream):
            print("driftmon: give one input file (with --stream), or --input STREAM=PATH per stream",
                  file=sys.stderr)
            return 2
        if args.inputs:
            inputs = _inputs(cfg, args.inputs, args.config)
            try:
                replay(cfg, None, args.format, None, not args.no_flush, sys.stdout, inputs=inputs)
            except OSError as exc:
                print(f"driftmon: cannot read {exc.filename or 'an input'}: {exc.strerror}", file=sys.stderr)
                return 2
            return 0
        for name in args.stream or []:
            if name not in {s.name for s in cfg.streams}:
                print(f"driftmon: no stream named {name!r} in {args.config}", file=sys.stderr)
                return 2
        if not args.stream and len(cfg.streams) > 1:
            print(f"driftmon: replaying stream {cfg.streams[0].name!r} (use --stream to choose)", file=sys.stderr)
        try:
            replay(cfg, args.input, args.format, args.stream, not args.no_flush, sys.stdout)
        except OSError as exc:
            print(f"driftmon: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
            return 2
        return 0
    if args.command == "run":
        from driftmon.service.process import catch_stop_signals, run_daemon

        stop = catch_stop_signals()  # first: a SIGTERM while the config and numpy load exits 0, not 143
        return run_daemon(_load(args.config), reset_state=args.reset_state, stop=stop)
    from driftmon.demo import run_demo

    return run_demo(duration=args.duration, config_path=args.config, http=args.http)


if __name__ == "__main__":
    raise SystemExit(main())
