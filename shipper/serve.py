"""`shipper run` as a process: one daemon, one worker of several, or their supervisor.

The supervisor (shipper.workers) forks its first workers from this process once the
config is loaded and everything a worker runs is imported, so they begin at once: two
fresh interpreters importing it all took 0.4 CPU s, and 0.2 s of a two-core machine's
start. A worker it starts again later is a fresh `shipper run --worker i/N` (forking a
process whose event loop runs is not safe). Either way the worker runs `daemon` below.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from shipper.config import Config, ConfigError


class Failure(click.ClickException):
    """A runtime failure: one line on stderr, exit code 1."""

    exit_code = 1


class BadConfig(click.ClickException):
    """A configuration mistake: one line on stderr naming the key, exit code 2."""

    exit_code = 2


def early_signals() -> list[int]:
    """Signals for a process that is still starting: a SIGTERM or SIGINT is kept (the list
    returned) and honoured once the loop runs, a clean stop; SIGHUP (reload) must not end
    it, as it reads the file now anyway."""
    pending: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: pending.append(number))
    signal.signal(signal.SIGHUP, lambda _number, _frame: None)
    return pending


def supervise(cfg: Config, config_path: str | None, once: bool, pending: list[int]) -> None:
    from shipper.observe import setup_logging
    from shipper.workers import Supervisor

    setup_logging(cfg.logging.level, cfg.logging.format, None)
    if config_path is None:
        raise BadConfig("workers: more than 1 needs a config file (--config) for them")
    if cfg.kubernetes.enabled:
        import shipper.kube.source  # noqa: F401  (imported once, for the forked workers)

    def serve(index: int, report_fd: int) -> int:
        label = f"{index}/{cfg.workers}"
        return exit_code_of(
            lambda: daemon(cfg, config_path, once, label, report_fd, early_signals())
        )

    code = Supervisor(cfg, config_path, once, serve).main(pending)
    if code:
        raise Failure(f"a worker failed (exit code {code}); see its log above")


def daemon(
    cfg: Config,
    config_path: str | None,
    once: bool,
    worker: str | None,
    report_fd: int | None,
    pending: list[int],
) -> None:
    """One shipper, or worker `worker` ("i/N") of several."""
    from shipper.app import RunResult, run_daemon
    from shipper.checkpoint import CheckpointError
    from shipper.observe import setup_logging
    from shipper.shares import Share, read_plan
    from shipper.sinks.elasticsearch import SinkStartError
    from shipper.workers import report, worker_config

    share = Share()
    if worker is not None:
        index, _, count = worker.partition("/")
        root = Path(cfg.checkpoint.path)  # the supervisor's: where its plan is
        try:
            share = Share(int(index), int(count), read_plan(root, int(count)))
        except CheckpointError as exc:
            raise Failure(str(exc)) from None
        cfg = worker_config(cfg, share.mine, share.workers)

    def started(result: RunResult) -> None:
        if report_fd is not None:
            report(report_fd, result.monitor_port)
        if pending:
            result.pipeline.stop()

    setup_logging(cfg.logging.level, cfg.logging.format, worker)
    try:
        asyncio.run(
            run_daemon(
                cfg,
                once=once,
                on_start=started,
                validated=True,
                share=share,
                config_path=config_path,
                transform=None
                if worker is None
                else lambda c: worker_config(c, share.mine, share.workers),
            )
        )
    except (CheckpointError, SinkStartError) as exc:
        raise Failure(str(exc)) from None
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    except OSError as exc:
        raise Failure(f"{exc.__class__.__name__}: {exc}") from None


def exit_code_of(body: Callable[[], None]) -> int:
    """Run `body` as the whole life of a forked child; the exit code `shipper run` would
    have given for how it ended (its message on stderr, as click shows it)."""
    try:
        body()
        return 0
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        logging.shutdown()
