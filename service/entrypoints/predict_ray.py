"""`predict PATH... --out results.csv|results.parquet --ray [ADDRESS]`: the CLI's rows, scored on a Ray cluster.

Ray Data carries the files' paths to an actor pool sized to the cluster (`map_batches`); each actor holds the
service's own assembly (`ServedModel.load` from the Settings: the same card, engine and precision choice, the
predictor), reads its files, decodes them with the one preprocessing within its share of the node's decode
memory budget, and answers each file as `predict_cli` does (`classify_bytes`). Rows stream back in input order
to this process, which writes one CSV (the CLI's columns and formatting) or one Parquet file and moves the
progress bar.

The actors read the bytes, not Ray's `read_binary_files`: that one reads every file whole into the object store
and fails its block on one unreadable file, where a file over MAX_FILE_BYTES must be refused unread and an
unreadable one must be a row with its reason.

Paths are listed here. Local paths (folders recursively, globs) are expanded exactly as without --ray and must
exist at the same place on every node (a shared mount); a URI (`s3://bucket/cells/`, `gs://...`, `file:///...`)
is listed and read with the pyarrow filesystem its scheme names, wherever pyarrow is configured for it.
"""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from pyarrow import fs as pafs
from tqdm import tqdm

from service.core.assembly import model_source
from service.core.config import Settings
from service.core.metrics import Metrics
from service.core.model import ModelLoadError
from service.core.pipeline import Pipeline
from service.core.ray_cluster import connect
from service.core.served import ServedModel
from service.entrypoints.predict_rows import (
    COLUMNS,
    GLOB_CHARS,
    Row,
    cannot_read,
    classify_bytes,
    expand,
    too_large,
)

# What each actor holds: one onnxruntime thread and one decode thread per CPU reserved for it.
ACTOR_CPUS = 1.0
ROWS = pa.schema([
    ("path", pa.string()), ("probability", pa.float64()), ("label", pa.string()),
    ("model_version", pa.string()), ("error", pa.string()),
])  # fmt: skip


def is_uri(argument: str) -> bool:
    return "://" in argument


def expand_uri(argument: str) -> Iterator[tuple[str, str | None]]:
    """(URI, reason or None) for each file of a URI: a file, a folder (recursively) or a glob."""
    scheme, rest = argument.split("://", 1)
    pattern = argument if GLOB_CHARS & set(rest) else None
    base = argument
    if pattern is not None:  # listed from the folder above the first wildcard
        cut = min(rest.find(c) for c in GLOB_CHARS if c in rest)
        base = f"{scheme}://{rest[:cut].rsplit('/', 1)[0]}"
    try:
        filesystem, root = pafs.FileSystem.from_uri(base)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File and pattern is None:
            yield argument, None
            return
        if info.type != pafs.FileType.Directory:
            yield argument, "the pattern matches no file" if pattern else "no such file or folder"
            return
        listed = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, pa.ArrowInvalid) as exc:
        yield argument, f"cannot list it: {exc}"
        return
    # Each file's URI is the listed base's with the file's path below it.
    files = sorted(f"{base.rstrip('/')}/{entry.path[len(root):].lstrip('/')}"
                   for entry in listed if entry.type == pafs.FileType.File)  # fmt: skip
    if pattern is not None:
        files = [file for file in files if fnmatch.fnmatchcase(file, pattern)]
        if not files:
            yield argument, "the pattern matches no file"
    yield from ((file, None) for file in files)


def listing(arguments: Sequence[str]) -> list[dict[str, str]]:
    """One item per file (or refused argument) in the order the CLI writes rows: `path` as the row names it,
    `read` where an actor reads it (an absolute path or a URI), `refused` the reason it is not read ('' if none)."""
    items = []
    for argument in arguments:
        if is_uri(argument):
            items += [{"path": uri, "read": uri, "refused": why or ""} for uri, why in expand_uri(argument)]
        else:
            # Absolute: Ray's workers do not run in this process's working folder.
            items += [{"path": str(path), "read": str(path.absolute()), "refused": why or ""}
                      for path, why in expand([argument])]  # fmt: skip
    return items


def rows_table(rows: Sequence[Row]) -> pa.Table:
    return pa.table({
        "path": [r.path for r in rows], "probability": [r.probability for r in rows],
        "label": [r.label for r in rows], "model_version": [r.model_version for r in rows],
        "error": [r.error for r in rows],
    }, schema=ROWS)  # fmt: skip


def _node_cpus() -> float:
    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == here:
            return float(node["Resources"].get("CPU", 1.0)) or 1.0
    return 1.0


def actor_settings(settings: Settings, cpus: float) -> Settings:
    """The Settings with onnxruntime and decode threads fitted to the actor's CPUs (unless set), so actors
    sharing a node do not each take all of its cores."""
    threads = max(1, math.ceil(cpus))
    return Settings(**{
        **settings.model_dump(),
        "ort_intra_op_threads": settings.ort_intra_op_threads or threads,
        "decode_threads": settings.decode_threads or threads,
        # Offline scores are rows in --out, not live answers awaiting a verdict: no actor keeps a log of its own.
        "prediction_log": False,
    })  # fmt: skip


class Scorer:
    """One actor of the pool: the service's model assembly and decode budget, over batches of listed files."""

    def __init__(self, settings: Settings, threshold: float | None, cpus: float) -> None:
        settings = actor_settings(settings, cpus)
        # This actor's share of its node: the decode budget follows it, as the service's follows its container.
        share = min(1.0, cpus / _node_cpus())
        self.threshold = threshold
        self.loop = asyncio.new_event_loop()
        self.pipeline = Pipeline.load(settings, Metrics(), memory_share=share)
        self.pipeline.warm_up()
        self.loop.run_until_complete(self.pipeline.start())
        # One filesystem per scheme://authority (an S3 one resolves its bucket's region when made).
        self.filesystems: dict[tuple[str, str], tuple[pafs.FileSystem, str]] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = batch.to_pydict()
        jobs = zip(columns["path"], columns["read"], columns["refused"], strict=True)
        return rows_table(self.loop.run_until_complete(self._rows(list(jobs))))

    async def _rows(self, jobs: list[tuple[str, str, str]]) -> list[Row]:
        return list(await asyncio.gather(*(self._row(*job) for job in jobs)))

    async def _row(self, shown: str, where: str, refused: str) -> Row:
        if refused:
            return Row(shown, error=refused)
        data = self._read_uri(where) if is_uri(where) else self._read_path(Path(where))
        if isinstance(data, str):
            return Row(shown, error=data)
        return await classify_bytes(self.pipeline, shown, where.rsplit("/", 1)[-1], data, self.threshold)

    def _read_path(self, path: Path) -> bytes | str:
        """The bytes, or the reason as `predict` words it without --ray."""
        limit = self.pipeline.settings.max_file_bytes
        try:
            if path.stat().st_size > limit:
                return too_large(limit)
            return path.read_bytes()
        except OSError as exc:
            return cannot_read(exc)

    def _read_uri(self, uri: str) -> bytes | str:
        limit = self.pipeline.settings.max_file_bytes
        scheme, rest = uri.split("://", 1)
        authority, _, key = rest.partition("/")
        try:
            if (scheme, authority) not in self.filesystems:
                self.filesystems[(scheme, authority)] = pafs.FileSystem.from_uri(f"{scheme}://{authority}/")
            filesystem, root = self.filesystems[(scheme, authority)]
            path = f"{root.rstrip('/')}/{key}"
            if filesystem.get_file_info(path).size > limit:
                return too_large(limit)
            with filesystem.open_input_file(path) as stream:
                return stream.read()
        except (OSError, pa.ArrowInvalid) as exc:
            return f"cannot read the file: {exc}"


@ray.remote(num_cpus=0)
def _load_error(settings: Settings) -> str | None:
    """Why the model does not load on a cluster node, or None: refused at once, as without --ray."""
    try:
        ServedModel.load(model_source(settings), settings, Metrics())
    except ModelLoadError as exc:
        return str(exc)
    return None


def score(settings: Settings, items: list[dict[str, str]], threshold: float | None) -> Iterator[pa.Table]:
    """Tables of rows in input order, as the actors answer them."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    # The one progress bar is this process's, as without --ray.
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # A group fills the predictor without overflowing its admission, as the CLI's does.
    group = max(1, min(settings.max_queue_images, 4 * settings.max_batch_size))
    actors = max(1, min(int(ray.cluster_resources().get("CPU", 1) // ACTOR_CPUS), math.ceil(len(items) / group)))
    dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / group))
    scored = dataset.map_batches(
        Scorer, fn_constructor_kwargs={"settings": settings, "threshold": threshold, "cpus": ACTOR_CPUS},
        batch_size=group, batch_format="pyarrow", num_cpus=ACTOR_CPUS,
        # All at once (each loads the model once); fewer after a node is lost, while Ray restarts its actors.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
    )  # fmt: skip
    yield from scored.iter_batches(batch_size=None, batch_format="pyarrow")


class Writer:
    """One CSV file as `predict` writes it, or one Parquet file with the same columns."""

    def __init__(self, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = out.suffix.lower() == ".parquet"
        if self.parquet:
            self._parquet = pq.ParquetWriter(out, ROWS)
        else:
            self._file = out.open("w", newline="")
            self._csv = csv.writer(self._file)
            self._csv.writerow(COLUMNS)

    def write(self, table: pa.Table) -> None:
        if self.parquet:
            self._parquet.write_table(table.cast(ROWS))
        else:
            self._csv.writerows(Row(**row).as_csv() for row in table.to_pylist())

    def close(self) -> None:
        if self.parquet:
            self._parquet.close()
        else:
            self._file.close()


def run_on_ray(settings: Settings, arguments: Sequence[str], threshold: float | None, out: Path,
               address: str | None) -> int:
    """`predict --ray`: the exit status of `predict` (0 some file classified, 1 none, 2 the model does not load)."""
    started = connect(address)
    try:
        error = ray.get(_load_error.remote(settings))
        if error is not None:
            print(f"predict: error: {error}", file=sys.stderr)
            return 2
        items = listing(arguments)
        classified = total = 0
        writer = Writer(out)
        try:
            with tqdm(total=len(items), unit="image", file=sys.stderr, disable=None) as progress:
                for table in score(settings, items, threshold) if items else ():
                    writer.write(table)
                    classified += table.column("error").null_count
                    total += table.num_rows
                    progress.update(table.num_rows)
        finally:
            writer.close()
    finally:
        if started:
            ray.shutdown()
    print(f"predict: {classified} of {total} files classified; wrote {out}", file=sys.stderr)
    return 0 if classified else 1
