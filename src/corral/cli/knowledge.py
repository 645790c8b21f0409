"""`corral knowledge`: ingest, query, inspect and drop knowledge bases (`knowledge:`).

The commands work on the data directory directly, with no server running; a model
embedder is called through the config's own providers and router.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from corral.cli._services import CONFIG_OPTION_HELP, console, load

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

    from corral.config.loaded import LoadedConfig
    from corral.knowledge import KnowledgeService
    from corral.llm.router import CallContext

T = TypeVar("T")
CONFIG_OPTION = typer.Option(None, "--config", "-c", help=CONFIG_OPTION_HELP)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON.")


class _TokenCount:
    def __init__(self) -> None:
        self.tokens = 0

    async def __call__(self, alias: str, tokens: int, ctx: CallContext) -> None:
        self.tokens += tokens


class _BarProgress:
    """The ingest's stages on a Rich progress bar (on stderr, so --json stays clean)."""

    def __init__(self, bar: RichProgress) -> None:
        self._bar = bar
        self._task: Any = None

    def stage(self, name: str, total: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, visible=False)
        self._task = self._bar.add_task(name, total=total)

    def advance(self, count: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, count)


def _run(loaded: LoadedConfig, work: Callable[[KnowledgeService], Awaitable[T]],
         counter: _TokenCount | None = None) -> T:
    from corral.knowledge import KnowledgeError, KnowledgeService
    from corral.llm.registry import build_provider
    from corral.llm.router import Router
    from corral.store.engine import data_dir

    config = loaded.config
    root = loaded.path.parent if loaded.path else Path.cwd()

    async def main() -> T:
        providers = {name: build_provider(name, p, env=loaded.env or None)
                     for name, p in config.providers.items() if p.enabled}
        router = Router(config.models, providers, settings=config.router)
        service = KnowledgeService.from_config(config.knowledge, root=root, data_dir=data_dir(), router=router,
                                               on_usage=counter)
        try:
            return await work(service)
        finally:
            await service.aclose()
            await router.aclose()

    try:
        return asyncio.run(main())
    except KnowledgeError as exc:
        typer.secho(f"corral: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _known(loaded: LoadedConfig, name: str) -> None:
    if name not in loaded.config.knowledge:
        from corral.config.errors import did_you_mean

        known = ", ".join(sorted(loaded.config.knowledge)) or "none are configured"
        typer.secho(f"corral: unknown knowledge base {name!r}{did_you_mean(name, loaded.config.knowledge)} "
                    f"(known: {known})", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


def _parse_filter(items: list[str]) -> dict[str, Any]:
    flt: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.secho(f"--filter {item!r}: expected key=value", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        parsed: Any = value
        if value in ("true", "false"):
            parsed = value == "true"
        elif value.lstrip("-").isdigit():
            parsed = int(value)
        existing = flt.get(key)
        if existing is None:
            flt[key] = parsed
        else:
            flt[key] = [*existing, parsed] if isinstance(existing, list) else [existing, parsed]
    return flt


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Knowledge bases for retrieval: ingest, query, stats, drop.", no_args_is_help=True)
    app.add_typer(group, name="knowledge")

    @group.command("ingest")
    def ingest(
        name: str = typer.Argument(..., help="A knowledge base from `knowledge:`."),
        config: Path | None = CONFIG_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Read the base's sources: new and changed files are chunked and embedded, deleted ones
        removed. Safe to run again at any time; an interrupted run resumes where it stopped."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        loaded = load(config)
        _known(loaded, name)
        counter = _TokenCount()
        with Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console(stderr=True), transient=True, disable=as_json) as bar:
            report = _run(loaded, lambda s: s.ingest(name, _BarProgress(bar)), counter)
        data = {"base": name, **report.to_dict(), "embedding_tokens": counter.tokens}
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            typer.echo(f"{name}: {report.files} files: {report.added} added, {report.changed} changed, "
                       f"{report.unchanged} unchanged, {report.removed} removed; {report.chunks_written} chunks "
                       f"written, {report.chunks_embedded} embedded in {report.seconds:.1f}s")
            for skipped in report.skipped:
                typer.echo(f"  skipped {skipped.source}: {skipped.reason}")
        if report.stopped:
            typer.secho(f"corral: embedding stopped: {report.stopped}; {report.pending} chunks wait for vectors. "
                        f"Run `corral knowledge ingest {name}` again to resume.", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)

    @group.command("query")
    def query(
        name: str = typer.Argument(..., help="A knowledge base from `knowledge:`."),
        text: str = typer.Argument(..., help="What to search for."),
        top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, max=100, help="How many passages."),
        mode: str | None = typer.Option(None, "--mode", help="hybrid, keyword or vector (default: the base's)."),
        filters: list[str] = typer.Option([], "--filter", help="key=value on chunk metadata; repeat for more."),
        config: Path | None = CONFIG_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Search a base and print the passages with their sources."""
        if mode not in (None, "hybrid", "keyword", "vector"):
            typer.secho("--mode must be hybrid, keyword or vector", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        loaded = load(config)
        _known(loaded, name)
        flt = _parse_filter(filters)
        hits = _run(loaded, lambda s: s.query(name, text, top_k=top_k, flt=flt, mode=mode))  # type: ignore[arg-type]
        if as_json:
            typer.echo(json.dumps({"results": [h.to_dict() for h in hits]}, indent=2, ensure_ascii=False))
            return
        if not hits:
            typer.echo("no results")
        for rank, hit in enumerate(hits, 1):
            heading = hit.metadata.get("heading") or hit.metadata.get("symbols") or ""
            typer.secho(f"{rank}. {hit.source}" + (f" ({heading})" if heading else "") + f"  score {hit.score:.4f}",
                        bold=True)
            typer.echo("   " + " ".join(hit.text.split())[:300])

    @group.command("stats")
    def stats(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
        """Every base: documents, chunks, vectors, chunks still waiting for vectors, search mode."""
        loaded = load(config)
        rows = _run(loaded, lambda s: s.stats())
        if as_json:
            typer.echo(json.dumps({"bases": [r.to_dict() for r in rows]}, indent=2))
            return
        from rich.table import Table

        table = Table("base", "documents", "chunks", "vectors", "pending", "search", "embedder", "store")
        for r in rows:
            table.add_row(r.name, str(r.documents), str(r.chunks), "-" if r.vectors is None else str(r.vectors),
                          str(r.pending), r.search + ("" if r.embedder else " (no embedder)"), r.embedder or "-",
                          r.store or "-")
        console().print(table)

    @group.command("drop")
    def drop(
        name: str = typer.Argument(..., help="A knowledge base from `knowledge:`."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Delete a base's chunks, keyword index and vectors (the sources are not touched)."""
        loaded = load(config)
        _known(loaded, name)
        if not yes and not typer.confirm(f"Drop every chunk and vector of {name!r}?"):
            raise typer.Exit(1)
        _run(loaded, lambda s: s.drop(name))
        typer.echo(f"dropped {name}")
