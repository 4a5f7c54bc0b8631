"""`shipper <verb>`: a thin shell over shipper.app. Exit codes: 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path

import click

from shipper import __version__
from shipper.config import Config, ConfigError, default_config, load_config, validate
from shipper.serve import BadConfig, Failure, daemon, early_signals, supervise

log = logging.getLogger("shipper")


def _load(path: str | None, validated: bool = True) -> Config:
    """The config at `path` (built-in defaults without one), validated unless asked not to."""
    try:
        cfg = load_config(path) if path else default_config()
        if validated:
            validate(cfg)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    return cfg


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shipper")
def main() -> None:
    """shipper: Kubernetes container logs to Elasticsearch, nothing lost, nothing duplicated.

    \b
    Examples:
      shipper tail -f --namespace shop            watch what would be shipped
      shipper run --config /etc/shipper/config.yaml
      shipper check-config config.yaml
      shipper checkpoints --config config.yaml    how far each file is delivered
    """


@main.command()
@click.argument("paths", nargs=-1)
@click.option(
    "-f", "--follow", is_flag=True, help="Keep following: new lines, new files, rotations."
)
@click.option(
    "--from",
    "read_from",
    type=click.Choice(["beginning", "end"]),
    default="beginning",
    show_default=True,
    help="Where to start in each file.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["json", "pretty"]),
    default=None,
    help="json: documents exactly as indexed; pretty: one coloured line per record "
    "(default on a terminal).",
)
@click.option("-n", "--namespace", default="*", show_default=True, help="Namespace glob.")
@click.option("-p", "--pod", default="*", show_default=True, help="Pod name glob.")
@click.option("-c", "--container", default="*", show_default=True, help="Container name glob.")
@click.option("-g", "--grep", default="", help="Only records whose message matches this regex.")
@click.option(
    "--multiline",
    type=click.Choice(["java", "python", "go"]),
    default=None,
    help="Join stack traces with a built-in rule.",
)
@click.option(
    "--pods",
    "pods_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Enrich from a `kubectl get pods -A -o json` dump.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Enrich from the API server of this kubeconfig.",
)
@click.option("--node", default="", help="Node name for the API watch (--kubeconfig).")
def tail(
    paths: tuple[str, ...],
    follow: bool,
    read_from: str,
    output: str | None,
    namespace: str,
    pod: str,
    container: str,
    grep: str,
    multiline: str | None,
    pods_file: str | None,
    kubeconfig: str | None,
    node: str,
) -> None:
    """Show what shipper sees: the documents it would index, from the same code as the daemon.

    PATHS are files, directories (their *.log files) or globs; default /var/log/containers.
    Reads from the start of each file and exits at the end, or keeps following with -f.
    Writes no checkpoints.

    \b
    Examples:
      shipper tail                                   everything on this node, then exit
      shipper tail -f -n kube-system -p 'coredns-*'  follow one workload
      shipper tail -o json ./logs | jq .message      documents as indexed
      shipper tail --grep 'timeout|refused' --from end -f
      shipper tail --pods pods.json /tmp/node-logs   post-mortem on copied files
    """
    import re

    from parsers.decoder import DecoderOptions
    from parsers.multiline import BUILTIN
    from shipper.app import TailFilters, tail_pipeline
    from shipper.kube.fragment import FileNameMetadata
    from shipper.observe import setup_logging
    from shipper.sinks.stdout import PrettySink, StreamSink

    setup_logging("warning", "text")
    if grep:
        try:
            re.compile(grep)
        except re.error as exc:
            raise click.BadParameter(
                f"not a regular expression: {exc}", param_hint="--grep"
            ) from None
    tty = sys.stdout.isatty()
    pretty = (output or ("pretty" if tty else "json")) == "pretty"
    color = pretty and tty and "NO_COLOR" not in os.environ

    def make_sink(ack):  # type: ignore[no-untyped-def]
        return PrettySink(ack, color=color) if pretty else StreamSink(ack)

    if pods_file or kubeconfig:
        from shipper.kube.source import tail_source

        metadata = tail_source(pods_file=pods_file, kubeconfig=kubeconfig, node=node)
    else:
        metadata = FileNameMetadata()
    decoder = DecoderOptions(multiline=BUILTIN[multiline] if multiline else None)
    pipeline = tail_pipeline(
        list(paths),
        follow,
        read_from,
        TailFilters(namespace, pod, container, grep),
        make_sink,
        metadata,
        decoder,
    )

    async def go() -> None:
        from shipper.app import _install_signals

        _install_signals(pipeline)
        await pipeline.run()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="SHIPPER_CONFIG",
    help="Config file (default: built-in defaults).",
)
@click.option(
    "--once",
    is_flag=True,
    help="Read every matched file to its end, deliver, commit checkpoints, exit 0.",
)
@click.option("--worker", "worker", default=None, hidden=True, help="i/N: one of `workers`.")
@click.option("--report-fd", "report_fd", type=int, default=None, hidden=True)
def run(config_path: str | None, once: bool, worker: str | None, report_fd: int | None) -> None:
    """Run the shipper: follow the logs, enrich, deliver, commit checkpoints.

    With no elasticsearch.hosts configured, documents go to stdout as NDJSON.
    SIGTERM or SIGINT: stop reading, deliver what is in flight within shutdown.grace,
    commit checkpoints, exit 0.

    \b
    Examples:
      shipper run --config /etc/shipper/config.yaml
      shipper run --config backfill.yaml --once
    """
    # A SIGTERM that arrives while shipper is still starting (imports, config, the first
    # checkpoint read) is kept and honoured once the loop runs: a clean stop, exit 0.
    pending = early_signals()
    # `kill -USR1 <pid>` writes every thread's stack to stderr: for "why is it stuck?".
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Validated before the heavy imports: a config mistake is reported at once. (So
    # run_daemon need not validate it again.)
    cfg = _load(config_path)
    if cfg.workers > 1 and worker is None:
        supervise(cfg, config_path, once, pending)
    else:
        daemon(cfg, config_path, once, worker, report_fd, pending)


@main.command("check-config")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option(
    "--config-only",
    is_flag=True,
    help="Check the config alone, not what it needs on this machine (for CI).",
)
def check_config(config_path: str, config_only: bool) -> None:
    """Validate a config file as `shipper run` would; exit 2 with the key at fault if wrong.

    Checks every key, the keys against each other, and what the config needs on this
    machine: credential, CA and pods files, the kubeconfig or in-cluster account.

    \b
    Examples:
      shipper check-config /etc/shipper/config.yaml
      NODE_NAME=ci shipper check-config --config-only deploy/config.yaml
    """
    cfg = _load(config_path, validated=False)
    try:
        validate(cfg, environment=not config_only)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    target = cfg.elasticsearch.index or cfg.elasticsearch.data_stream
    sink = (
        ", ".join(cfg.elasticsearch.hosts) + f" -> {target}"
        if cfg.elasticsearch.hosts
        else ("stdout")
    )
    click.echo(f"{config_path}: ok (inputs: {', '.join(cfg.inputs.paths)}; sink: {sink})")


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="SHIPPER_CONFIG",
    help="Config file (for checkpoint.path).",
)
@click.option(
    "--reset",
    "reset_path",
    default=None,
    help="Set the committed offset of the file at this path (as listed) back to 0, "
    "so it is shipped again. Stop the daemon first.",
)
@click.option(
    "--to",
    "reset_to",
    type=int,
    default=0,
    show_default=True,
    help="With --reset: the offset to set.",
)
def checkpoints(config_path: str | None, reset_path: str | None, reset_to: int) -> None:
    """List how far each file is delivered: path, committed offset, size, lag in bytes.

    \b
    Examples:
      shipper checkpoints --config /etc/shipper/config.yaml
      shipper checkpoints --config config.yaml --reset /var/log/containers/web-1_shop_app-<id>.log
    """
    from shipper.checkpoint import CheckpointError, CheckpointStore
    from shipper.tail.identity import is_compressed, same_file

    cfg = _load(config_path, validated=False)  # only checkpoint.path matters here
    directory = Path(cfg.checkpoint.path)
    if not directory.is_dir():
        raise Failure(f"checkpoint.path {str(directory)!r} does not exist (nothing shipped yet?)")
    try:
        store = CheckpointStore.open(directory)
    except CheckpointError as exc:
        raise Failure(str(exc)) from None
    try:
        if reset_path is not None:
            keys = [k for k, e in store.files.items() if reset_path in (e.path, e.real)]
            if not keys:
                raise Failure(f"no checkpoint for {reset_path!r}; see `shipper checkpoints`")
            for key in keys:
                store.reset(key, reset_to)
            store.save()
            click.echo(f"{reset_path}: committed offset set to {reset_to}")
            return
        rows = []
        for entry in sorted(store.files.values(), key=lambda e: e.real or e.path):
            where = entry.real or entry.path  # the file holding the text now
            try:
                st: os.stat_result | None = os.stat(where)
            except OSError:
                st = None
            size = None
            if same_file(st, entry.dev, entry.ino) and not is_compressed(where):
                size = st.st_size if st is not None else None
            lag = "-" if size is None else str(max(size - entry.offset, 0))
            rows.append((where, str(entry.offset), "-" if size is None else str(size), lag))
        header = ("PATH", "OFFSET", "SIZE", "LAG")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            click.echo(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        if not rows:
            click.echo("(no checkpoints yet)")
    finally:
        store.close()
