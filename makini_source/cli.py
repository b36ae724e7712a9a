"""`makini-pipeline`: load Makini into a dlt destination, check connections, build views, and
scaffold the configuration of a project.

Commands::

    makini-pipeline [run] [--demo] [--destination NAME] [--entities a,b] ...
    makini-pipeline check [--demo]          # sync status of every configured connection
    makini-pipeline views [--destination]   # create the analytics views in the dataset
    makini-pipeline init [DIR] [--force]    # write DIR/.dlt/config.toml and secrets.toml

`python pipelines/makini_pipeline.py` is the same program. Mistakes in the configuration or
the arguments print one line and exit with status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import dlt

from makini_source import connection_failures, makini_source, source_connections
from makini_source.analytics import MODELS, create_views
from makini_source.catalogue import default_entities, select
from makini_source.cli_errors import USAGE_ERROR, UsageError, describe, redact
from makini_source.cli_report import (
    print_analytics,
    print_destination_counts,
    print_run_summary,
    render_spend_chart,
)
from makini_source.exceptions import ConfigurationError, MakiniAPIError, ReauthorizationRequired
from makini_source.pipeline import (
    DEFAULT_DATASET_NAME,
    DEFAULT_PIPELINE_NAME,
    load,
    make_destination,
    make_pipeline,
)
from makini_source.progress import RunProgress
from makini_source.scaffold import scaffold
from makini_source.window import to_datetime

COMMANDS = ("run", "check", "views", "init")
_TOP_LEVEL = ("-h", "--help", "--version")  # arguments that are not `run`'s
DEMO_PIPELINE_NAME = "makini_demo"  # and so the demo's DuckDB file, makini_demo.duckdb
OLD_DEFAULT_DATABASE = "makini_warehouse.duckdb"  # the default before it became dlt's own
CHILD_TABLE = "purchase_order_line_items"
UNHEALTHY = ("error", "reauthorization_required")

CONFIGURATION_HELP = """\
configuration (dlt's: environment variables win over .dlt/secrets.toml and .dlt/config.toml in
the working directory, then ~/.dlt/; `makini-pipeline init` writes both files, documented):
  SOURCES__MAKINI__CONNECTIONS  secret: JSON {"<connection name>": "<token>", ...}
  SOURCES__MAKINI__API_TOKEN    secret: one token, loaded as connection "default"
  SOURCES__MAKINI__BASE_URL     API root (default https://api.makini.io)
  SOURCES__MAKINI__<SETTING>    every other [sources.makini] key of .dlt/config.toml
  DESTINATION__<NAME>__CREDENTIALS  credentials of --destination NAME

exit status: 0 done; 1 a load failed (or `check`: a connection is unhealthy); 2 a mistake in
the configuration or the arguments, or some connections failed (the others were loaded)."""


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line, exit status 2 (argparse prints the whole usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser: one subcommand per command, each with only its own options."""
    parser = _Parser(
        prog="makini-pipeline",
        description=__doc__,
        epilog=CONFIGURATION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="{run,check,views,init}")

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    demo = _Parser(add_help=False)
    demo.add_argument(
        "--demo", action="store_true", help="serve a local Makini sandbox and use its connections"
    )
    demo.add_argument(
        "--demo-purchase-orders", type=_positive, default=200, help="POs per demo connection"
    )

    target = _Parser(add_help=False)
    target.add_argument(
        "--destination", default="duckdb", help="any dlt destination name (default: duckdb)"
    )
    target.add_argument(
        "--dataset-name", default=DEFAULT_DATASET_NAME, help="destination dataset/schema"
    )
    target.add_argument(
        "--pipeline-name",
        default=None,
        help=f"dlt pipeline name, holds incremental state (default {DEFAULT_PIPELINE_NAME}; "
        f"{DEMO_PIPELINE_NAME} with --demo)",
    )
    target.add_argument(
        "--pipelines-dir", default=None, help="where dlt keeps pipeline state (~/.dlt/pipelines)"
    )
    target.add_argument(
        "--duckdb-path",
        default=None,
        help="DuckDB file (default <pipeline name>.duckdb in the working directory)",
    )

    def command(name: str, help_text: str, *parents: argparse.ArgumentParser) -> Any:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=CONFIGURATION_HELP,
            parents=[*parents, common],  # type: ignore[list-item]  # mypy misreads the unpacking
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command("run", "load every configured connection (the default command)", demo, target)
    run.add_argument(
        "--entities",
        type=entity_list,
        default=None,
        help="comma-separated entities, 'all', or a family ('erp:*', 'eam:*'); default: "
        + ", ".join(entity.name for entity in default_entities()),
    )
    run.add_argument(
        "--raw-tables",
        nargs="?",
        const="all",
        default=None,
        metavar="TABLES",
        help="also load the connected systems' raw tables (unified connections): all, or "
        "comma-separated names (EKKO,EKPO); each into raw__<table>",
    )
    run.add_argument("--start-date", default=None, help="first run's lower bound of updatedAt")
    run.add_argument(
        "--end-date", default=None, help="bounded backfill's upper bound; leaves state alone"
    )
    run.add_argument("--hard-delete", action="store_true", help="delete rows of deleted records")
    run.add_argument(
        "--page-size", type=_positive, default=None, help="records per request (capped per entity)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress lines")
    run.add_argument("--views", action="store_true", help="then create the analytics views")
    run.add_argument(
        "--chart",
        nargs="?",
        const="makini_spend_by_month.png",
        default=None,
        help="then render spend by month as a PNG (default makini_spend_by_month.png)",
    )
    command("check", "print the sync status of every configured connection", demo)
    views = command("views", f"create the analytics views ({', '.join(MODELS)})", target)
    views.add_argument("--demo", action="store_true", help="in the demo's dataset")
    init = command("init", "write .dlt/config.toml and .dlt/secrets.toml templates into DIR")
    init.add_argument("directory", nargs="?", default=".", metavar="DIR", help="default: .")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; `run` when no command is given."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0] not in COMMANDS and arguments[0] not in _TOP_LEVEL):
        arguments.insert(0, "run")
    return build_parser().parse_args(arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_request:  # --help, --version, argument errors (status 2)
        return exit_request.code if isinstance(exit_request.code, int) else USAGE_ERROR
    try:
        return COMMAND_FUNCTIONS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line (or --debug)
        message, status = describe(exc)
        if args.debug:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            print(redact(text), file=sys.stderr, end="")
        print(f"error: {redact(message)}", file=sys.stderr)
        if status != USAGE_ERROR and not args.debug:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return status


def run(args: argparse.Namespace) -> int:
    """`run`: loads once; prints progress, a summary and (demo) the analytics."""
    with ExitStack() as stack:
        source_kwargs = _source_options(args)
        if args.demo:
            source_kwargs.update(stack.enter_context(_demo_connections(args)))
        progress = RunProgress(enabled=not args.no_progress)
        pipeline = _pipeline(args, progress)
        source = makini_source(**source_kwargs)
        progress.watch(source)
        if pipeline.has_pending_data:
            print("Finishing the load packages an interrupted run left, then loading...")
        started = time.monotonic()
        info = load(pipeline, source)
        print(info)
        print_run_summary(source, time.monotonic() - started)
        print_destination_counts(pipeline)
        if args.views or args.demo:
            create_views(pipeline)
            print(f"\nAnalytics views created in {args.dataset_name}: {', '.join(MODELS)}")
        if args.demo:
            print_analytics(pipeline)
        if args.chart:
            render_spend_chart(pipeline, args.chart)
        failures = connection_failures(source)
        if failures:
            print(
                f"\n{len(failures)} connection(s) failed; the others were loaded:", file=sys.stderr
            )
            for name, error in sorted(failures.items()):
                print(f"  {name}: {error}", file=sys.stderr)
            return 2
    return 0


def check(args: argparse.Namespace) -> int:
    """`check`: prints the sync status of every connection; 1 if any is unhealthy."""
    with ExitStack() as stack:
        source_kwargs = stack.enter_context(_demo_connections(args)) if args.demo else {}
        source = makini_source(**source_kwargs)
        unhealthy = 0
        print(
            f"{'connection':<14} {'dialect':<12} {'status':<14} {'system':<12} "
            f"{'complete until':<28} {'reauth':<6}"
        )
        for connection in source_connections(source):
            try:
                dialect, point = connection.resolve()
                reauth = point.state == "reauthorization_required"
                row = (
                    dialect.name + (f"/{dialect.family}" if dialect.family else ""),
                    point.reported or "?",
                    point.system or "?",
                    point.complete_until or "not complete",
                    "yes" if reauth else "no",
                )
                unhealthy += point.state in UNHEALTHY
            except ReauthorizationRequired:
                row = ("?", "token rejected (401)", "?", "?", "yes")
                unhealthy += 1
            except MakiniAPIError as exc:
                row = ("?", f"unreachable ({exc.status or exc.code or 'network'})", "?", "?", "?")
                unhealthy += 1
            finally:
                connection.client.close()
            print(
                f"{connection.name:<14} {row[0]:<12} {row[1]:<14} {row[2]:<12} {row[3]:<28} "
                f"{row[4]:<6}"
            )
    if unhealthy:
        print(f"\n{unhealthy} connection(s) unhealthy", file=sys.stderr)
        return 1
    return 0


def views(args: argparse.Namespace) -> int:
    """`views`: creates the analytics views in the dataset a load filled."""
    pipeline = _pipeline(args)
    pipeline.sync_destination()  # the schema of the last load, also on a machine without state
    schema_tables: dict[str, Any] = (
        pipeline.default_schema.tables if pipeline.default_schema_name else {}
    )
    missing = [t for t in ("purchase_orders", CHILD_TABLE) if t not in schema_tables]
    if missing:
        raise UsageError(
            f"dataset {pipeline.dataset_name!r} of pipeline {pipeline.pipeline_name!r} has no "
            f"{' or '.join(missing)} yet; load it first (makini-pipeline run, same "
            "--destination/--dataset-name/--pipeline-name)"
        )
    for view in create_views(pipeline).values():
        print(f"created view {view}")
    return 0


def init(args: argparse.Namespace) -> int:
    """`init`: writes the configuration templates into a project."""
    for path in scaffold(args.directory, force=args.force):
        print(f"wrote {path}")
    print(
        "Fill in the connections' tokens in .dlt/secrets.toml (keep it out of version "
        "control), then run makini-pipeline from that directory."
    )
    return 0


COMMAND_FUNCTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run,
    "check": check,
    "views": views,
    "init": init,
}


def version_text() -> str:
    """`makini-pipeline <version> (dlt <version>)`."""
    try:
        own = metadata.version("makini-source")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        own = "unknown"
    return f"makini-pipeline {own} (dlt {dlt.__version__})"


def entity_list(value: str) -> list[str]:
    """`--entities`: comma-separated entities (names, paths, `all`, `erp:*`), spaces allowed."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no entity given")
    for name in names:
        if name in (CHILD_TABLE, "purchase-order-line-items", "line_items"):
            raise argparse.ArgumentTypeError(
                f"{name} is not an entity of its own: purchase_orders loads it (each purchase "
                "order brings all its lines); pass purchase_orders"
            )
    try:
        return [entity.name for entity in select(names)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return number


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The source's arguments from the command line (the rest comes from dlt config)."""
    start = _date_option("--start-date", args.start_date, "sources.makini.start_date")
    end = _date_option("--end-date", args.end_date, "sources.makini.end_date")
    if start is not None and end is not None and to_datetime(end) <= to_datetime(start):
        raise UsageError(
            f"end_date {end} is not after start_date {start}; a backfill reads "
            "[start_date, end_date)"
        )
    options = {
        "entities": args.entities,
        "start_date": args.start_date,
        "end_date": args.end_date,
        "hard_delete": True if args.hard_delete else None,
        "page_size": args.page_size,
        "raw_tables": args.raw_tables,
    }
    return {key: value for key, value in options.items() if value is not None}


def _date_option(flag: str, given: str | None, setting: str) -> str | None:
    """A date from its flag, else from config; checked to be a date or timestamp."""
    value = given if given is not None else dlt.config.get(setting)
    if value is None:
        return None
    try:
        to_datetime(value)
    except ConfigurationError:
        where = flag if given is not None else setting
        raise UsageError(
            f"{where} {value!r} is not a date or RFC 3339 timestamp (e.g. 2024-01-31 or "
            "2024-01-31T08:00:00Z)"
        ) from None
    return str(value)


def _pipeline(args: argparse.Namespace, progress: RunProgress | None = None) -> dlt.Pipeline:
    name = args.pipeline_name or (DEMO_PIPELINE_NAME if args.demo else DEFAULT_PIPELINE_NAME)
    destination = make_destination(
        args.destination, pipeline_name=name, duckdb_file=args.duckdb_path
    )
    if args.destination != "duckdb" and args.duckdb_path:
        raise UsageError(f"--duckdb-path applies to --destination duckdb, not {args.destination}")
    if (
        args.destination == "duckdb"
        and not args.duckdb_path
        and Path(OLD_DEFAULT_DATABASE).exists()
        and not Path(f"{name}.duckdb").exists()
    ):
        raise UsageError(
            f"{OLD_DEFAULT_DATABASE} (the default DuckDB file of earlier versions) is here but "
            f"{name}.duckdb is not: pass --duckdb-path {OLD_DEFAULT_DATABASE} to keep loading "
            f"into it, or rename it to {name}.duckdb (dlt's own default)"
        )
    return make_pipeline(name, destination, args.dataset_name, args.pipelines_dir, progress)


@contextmanager
def _demo_connections(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Serves the sandbox in-process; yields the source arguments of its connections."""
    try:
        from makini_sandbox import SandboxConfig, SandboxServer, default_connections
    except ImportError:
        raise UsageError("--demo needs the sandbox: pip install 'makini-source[demo]'") from None
    connections = default_connections()
    for connection in connections:
        connection.purchase_orders = args.demo_purchase_orders
    with SandboxServer(SandboxConfig(connections=connections)) as server:
        print(f"Makini sandbox serving {len(server.tokens)} connections at {server.url}")
        # the sandbox speaks both dialects: the last connection is read in the unified one,
        # beside the others in v1, into the same tables
        specs: dict[str, Any] = {
            name: {"token": token, "dialect": "v1"} for name, token in server.tokens.items()
        }
        specs[connections[-1].name]["dialect"] = "unified"
        yield {"base_url": server.url, "connections": specs}


if __name__ == "__main__":
    sys.exit(main())
