"""`dtm serve`, `dtm migrate`, `dtm version`: thin wrappers over the server package."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import click

from dtm import __version__

log = logging.getLogger("dtm.cli")

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="DTM_CONFIG",
    help="YAML file with upstream's keys (conf.yml).",
)
_store_path_option = click.option(
    "--store-path", help="SQLite file of the embedded store (Store.Path)."
)


def _load_config(config_path: str | None, overrides: dict[str, Any]) -> Any:
    from dtm.server import config

    try:
        return config.load(config_path, overrides=overrides)
    except config.ConfigError as exc:
        click.echo(f"dtm: configuration error: {exc}", err=True)
        sys.exit(2)


@click.group()
def main() -> None:
    """DTM, the distributed transaction manager, in Python."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@main.command()
@_config_option
@_store_path_option
@click.option(
    "--barrier",
    "barrier_url",
    metavar="URL",
    help="Instead of the store: create the sub-transaction barrier table in the business "
    "database at URL (mysql://user:password@host:port/db, postgresql://..., "
    "sqlite:///path).",
)
@click.option(
    "--barrier-table",
    metavar="[SCHEMA.]TABLE",
    help="With --barrier: the table's name (default: upstream's dtm_barrier.barrier).",
)
def migrate(
    config_path: str | None,
    store_path: str | None,
    barrier_url: str | None,
    barrier_table: str | None,
) -> None:
    """Create the store's tables where they are missing; never drops data."""
    if barrier_url is not None:
        _migrate_barrier(barrier_url, barrier_table)
        return
    conf = _load_config(config_path, {"Store.Path": store_path})
    asyncio.run(_migrate(conf))
    click.echo(f"dtm: the {conf.Store.Driver} store's schema is ready")


def _migrate_barrier(url: str, table: str | None) -> None:
    from dtm.barrier import create_table, detect_dialect
    from dtm.cli.databases import connect

    try:
        conn = connect(url)
    except (ValueError, ImportError) as exc:
        raise click.BadParameter(str(exc), param_hint="--barrier") from None
    except Exception as exc:  # the driver's own connection errors
        click.echo(f"dtm: cannot connect to {url}: {exc}", err=True)
        sys.exit(1)
    try:
        name = detect_dialect(conn).table_name(table)
        create_table(conn, table=name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--barrier-table") from None
    finally:
        conn.close()
    click.echo(f"dtm: the barrier table {name} is ready")


async def _migrate(conf: Any) -> None:
    from dtm.server.stores import make_store
    from dtm.server.stores.base import StoreUnavailable

    store = make_store(conf.Store)
    try:
        await store.open()
        await store.migrate()
    except StoreUnavailable as exc:
        click.echo(f"dtm: store unavailable: {exc}", err=True)
        sys.exit(1)
    finally:
        await store.close()


@main.command()
@_config_option
@click.option("--host", help="Address to listen on (HttpHost).")
@click.option("--http-port", type=int, help="HTTP port (HttpPort); 0 picks a free one.")
@_store_path_option
@click.option("--log-level", help="debug, info, warn or error (LogLevel).")
def serve(
    config_path: str | None,
    host: str | None,
    http_port: int | None,
    store_path: str | None,
    log_level: str | None,
) -> None:
    """Run the server: HTTP API, transaction engine and recovery loop."""
    from dtm.cli.logs import configure

    conf = _load_config(
        config_path,
        {"HttpHost": host, "HttpPort": http_port, "Store.Path": store_path, "LogLevel": log_level},
    )
    configure(conf.LogLevel, conf.LogFormat)
    try:
        sock = socket.create_server((conf.HttpHost, conf.HttpPort), backlog=2048)
    except OSError as exc:
        click.echo(f"dtm: cannot listen on {conf.HttpHost}:{conf.HttpPort}: {exc}", err=True)
        sys.exit(1)
    try:
        import uvloop

        uvloop.run(_serve(conf, sock))
    except ImportError:
        asyncio.run(_serve(conf, sock))


async def _serve(conf: Any, sock: socket.socket) -> None:
    import uvicorn

    from dtm.server.app import create_app

    app = create_app(conf)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http="httptools",
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    host, port = sock.getsockname()[:2]
    log.info(
        "dtm %s listening on http://%s:%d (store %s)",
        __version__,
        host,
        port,
        conf.Store.Driver,
    )
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    main()
