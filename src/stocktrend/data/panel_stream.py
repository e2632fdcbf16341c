"""The panel build for universes no one process should hold: passes over chunks of
instruments, as Ray tasks (or one after the other in this process), each task holding one
chunk, the driver holding only (instruments x days) arrays of one number each.

1. read: each chunk's instruments from the user's files (``data.universe`` lists them and says
   where each chunk's rows are), validated and filtered as the in-memory build does; their
   days come back;
2. features: each instrument's candidates on the union calendar (the same
   ``panel.instrument_candidates``), its own features to a part file; the cross-sectional
   inputs, closes and completeness come back;
3. cross-section, labels, splits: in the driver, the cross-sectional features computed over
   blocks of dates of a memory-mapped (instruments, days, 5) array;
4. fits: each instrument's training-window statistics (``fitting.train_stats``), combined in
   ticker order into the scaler and the selection scores, exactly as the in-memory build
   combines them; so only training windows are seen, and the leakage tests hold unchanged;
5. write: each chunk's chosen, scaled features into the dataset's ``features.npy`` in the
   temporary folder that is swapped in at the end (through the file, by the task itself when
   it runs beside the driver, else by the driver from the task's result).

Both builds write identical datasets from the same input (a test). Where the tasks run: a
chunk whose rows are on object storage is read on any node of the cluster (spread over them),
one on the driver's disk on the driver's node; every later pass of a chunk runs where it was
read, beside its part files (``Parts``). Whatever a task needs from the driver travels as its
arguments (the calendar, the context; the chunk's cross-sectional rows, which a task beside
the driver reads from its file instead), and what the driver needs comes back as results, so
no task opens the driver's folders unless it runs beside them.
Parts are removed from every node whatever happens, so an interrupted build leaves the
previous dataset untouched and a rerun starts clean.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import pickle
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stocktrend import storage
from stocktrend.cluster.tasks import ANYWHERE, ordered_map, this_node
from stocktrend.data import fitting
from stocktrend.data.config import STREAMED_ABOVE, DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.features import adjusted_ohlc, context_features, finish
from stocktrend.data.labels import volatility_columns
from stocktrend.data.membership import membership_on
from stocktrend.data.panel import (
    XS_BASE,
    calendar_of,
    close_panel_members,
    cross_sectional,
    file_members,
    index_close_on,
    instrument_candidates,
    kept_member,
    listed,
    long_members,
    member_files,
    members_only,
    union_of_days,
)
from stocktrend.data.panel_build import (
    Universe,
    auxiliary_record,
    choose_features,
    labels_and_ends_of,
    panel_metadata,
    scaled_matrix,
    split_arrays,
    split_index,
    train_rows_by_instrument,
    write_panel,
)
from stocktrend.data.sources import (
    is_parquet,
    parse_table,
    read_all_sources,
    read_table,
    table_columns,
)
from stocktrend.data.splits import SplitPlan, plan_for
from stocktrend.data.universe import Chunk, csv_tickers, list_universe, parquet_tickers
from stocktrend.data.windows import SPLITS, cut_windows

log = logging.getLogger(__name__)
DATE_BLOCK = 256  # days per block of the cross-sectional pass


def streamed(cfg: DataConfig) -> bool:
    """Whether ``cfg.panel.build`` asks for the streamed build ("auto": past STREAMED_ABOVE
    listed instruments, counted from the files' headers, names or ticker column)."""
    if cfg.panel.build != "auto":
        return cfg.panel.build == "streamed"
    spec = cfg.panel
    if spec.source and not spec.ticker_column:
        source = cfg.sources[spec.source]
        names = source.include or [c for c in table_columns(cfg.source_path(spec.source))
                                    if c != source.columns["date"]]
    elif not spec.source:
        names = list(member_files(cfg))
    else:
        path = cfg.source_path(spec.source)
        if spec.ticker_column not in table_columns(path):
            return False  # the in-memory reader names the missing column
        if is_parquet(path):
            names = list(parquet_tickers(path, spec.ticker_column))
        else:
            names = csv_tickers(path, spec.source, spec.ticker_column)
    many = sum(listed(cfg, str(t).upper()) for t in names) > STREAMED_ABOVE
    log.info("panel %s: %s build", cfg.name, "streamed" if many else "in-memory")
    return many


@dataclasses.dataclass(frozen=True)
class Parts:
    """Where a chunk's part files are, seen from the process that asks: the scratch folder
    beside the output on the driver's node, a folder of this build's own in the node's temp
    folder on any other node (a chunk's later passes run on the node that read it)."""

    beside_output: Path
    driver_node: str | None
    build: str  # this build's own name

    def folder(self) -> Path:
        if self.driver_node is None or this_node() in (None, self.driver_node):
            return self.beside_output
        folder = storage.scratch("panel-parts") / self.build
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def build_panel_streamed(cfg: DataConfig, out_dir: str | Path, *, plan: SplitPlan | None = None,
                         progress: bool = False, use_ray: bool = False, chunk: int | None = None) -> dict:
    """Build ``cfg``'s panel dataset into ``out_dir`` in passes over chunks of ``chunk``
    instruments (default: the config's ``panel.chunk``)."""
    chunk = chunk or cfg.panel.chunk
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.parts-"))
    parts = Parts(scratch, this_node() if use_ray else None, f"{out.name}-{uuid.uuid4().hex[:12]}")
    try:
        return _build(cfg, out, parts, plan, progress, use_ray, chunk)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if use_ray:
            _remove_parts_elsewhere(parts)


def _remove_parts_elsewhere(parts: Parts) -> None:
    """This build's part folders on every other live node (a task that failed half-way may
    have left one where no chunk was read)."""
    import ray

    if not ray.is_initialized():  # never connected: no task ran anywhere (the caller's error says why)
        return
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != parts.driver_node]
        for _ in ordered_map(_remove_parts, nodes, shared=(parts,), use_ray=True, place=lambda node: node,
                             num_cpus=0):
            pass
    except Exception as err:  # a node lost meanwhile: its temp folder went with it
        log.warning("panel parts: could not remove this build's parts on every node (%s)", err)


def _build(cfg, out, parts, plan, progress, use_ray, chunk) -> dict:
    scratch = parts.beside_output
    frames, facts = read_all_sources(cfg, panel_facts_only=True)  # context series; the universe's facts only
    chunks = list_universe(cfg, scratch, chunk)
    log.info("panel %s: streamed build, %d chunks of up to %d instruments, %s", cfg.name, len(chunks), chunk,
             "as Ray tasks" if use_ray else "in this process")
    bar = tqdm(total=4 * len(chunks), desc=f"panel {cfg.name} (streamed)", disable=not progress, unit="chunk")

    def passes(fn, items, shared, place):
        for result in ordered_map(fn, items, shared=shared, use_ray=use_ray, reraise=(DataError,), place=place):
            bar.update()
            yield result

    bar.set_postfix_str("reading")
    # Rows on object storage are read on any node; rows on the driver's disk beside it.
    read = list(passes(_read_chunk, chunks, (cfg, parts), lambda c: ANYWHERE if c.on_object_storage else None))
    node_of = {c.number: r.pop("node") for c, r in zip(chunks, read)}
    if use_ray:
        log.info("panel %s: chunks read on %s", cfg.name,
                 ", ".join(f"node {n}: {list(node_of.values()).count(n)}" for n in sorted(set(node_of.values()))))
    tickers = [t for r in read for t in r["tickers"]]
    if len(tickers) < 3:
        raise DataError(f"panel: {len(tickers)} instruments with at least {cfg.panel.min_days} rows; a panel needs "
                        f"3 or more")
    calendar = calendar_of(cfg, [r["days"] for r in read])
    left_out: dict[str, int] = {}
    for r in read:
        facts |= r.pop("facts")
        left_out |= r.pop("left_out")
        del r["days"]
    context = context_features(cfg, frames, calendar, skip={cfg.panel.source} - {None})  # once per day
    context_matrix = finish(dict(context), calendar, "panel").to_numpy()
    listing = [(c.number, r["tickers"]) for c, r in zip(chunks, read) if r["tickers"]]  # chunks with instruments
    offsets = np.cumsum([0] + [len(t) for _, t in listing])

    bar.set_postfix_str("features")
    n, days = len(tickers), len(calendar)
    # Memory-mapped parts are opened for each write or block and closed after it: pages of a file
    # stay in a process's resident set while it keeps the file mapped.
    np.lib.format.open_memmap(scratch / "xs_base.npy", "w+", np.float64, (n, days, len(XS_BASE))).flush()
    np.lib.format.open_memmap(scratch / "xs.npy", "w+", np.float64, (n, days, 2 * len(XS_BASE))).flush()
    close, complete = np.empty((n, days)), np.empty((n, days), bool)
    names: list[str] = []
    beside_its_parts = lambda item: node_of[item if isinstance(item, int) else item[0]]  # noqa: E731
    for start, got in zip(offsets, passes(_features_chunk, [p[0] for p in listing], (cfg, parts, calendar, context),
                                          beside_its_parts)):
        rows = slice(start, start + len(got["close"]))
        close[rows], complete[rows], names = got["close"], got["complete"], got["names"]
        _write_part(scratch / "xs_base.npy", rows, got["xs_base"])
    bar.update(len(chunks) - len(listing))

    bar.set_postfix_str("cross-section, labels and splits")
    member, table_facts = membership_on(cfg, tickers, calendar)
    facts |= table_facts
    for a in range(0, days, DATE_BLOCK):  # a block of dates over every instrument: never the whole cube
        dates = slice(a, a + DATE_BLOCK)
        base = np.load(scratch / "xs_base.npy", mmap_mode="r")[:, dates]
        block, xs_names = cross_sectional(members_only(base, None if member is None else member[:, dates]), XS_BASE)
        _write_part(scratch / "xs.npy", (slice(None), dates), block)
        complete[:, dates] &= np.isfinite(block).all(axis=-1)
    names = names + xs_names
    index_close = index_close_on(cfg, frames, calendar)
    fwd, y, ends, labelled = labels_and_ends_of(cfg, calendar, close, index_close, complete, member)
    del complete, member
    fwd = fwd.astype(np.float32)  # as stored; the driver holds a few (instruments x days) arrays, no more
    plan = plan or plan_for(cfg.split, labelled, f"panel {cfg.name}")
    index, labels = split_index(cfg, calendar, ends, y, plan)
    del ends, y

    bar.set_postfix_str("fitting on the training windows")
    tr = index["train"]
    by_instrument = train_rows_by_instrument(tr, labels["train"], n)
    mi = fitting.mi_sample(len(tr), cfg.seed) if cfg.selection == "mutual_info" else np.empty(0, np.int64)
    wanted = [[] for _ in listing]  # per chunk: (sample position, instrument within chunk, row)
    part_of = np.searchsorted(offsets, tr[mi, 0], side="right") - 1
    for pos, (k, (t, row)) in enumerate(zip(part_of, tr[mi])):
        wanted[k].append((pos, t - offsets[k], row))
    # Generated as the tasks are sent: each carries its chunk's cross-sectional rows.
    def xs_for(number: int, start: int, count: int) -> np.ndarray | XsRows:
        """A chunk's cross-sectional rows: sent to a task on another node; read from the driver's
        file by a task beside it (the driver puts no copy of them into the object store)."""
        if use_ray and node_of[number] not in (None, parts.driver_node):
            return _rows_of(scratch / "xs.npy", start, count)
        return XsRows(int(start), count)

    items = ((number, xs_for(number, start, len(t)), by_instrument[start:start + len(t)], wanted[k])
             for k, ((number, t), start) in enumerate(zip(listing, offsets)))
    stats, mi_rows = [], np.empty((len(mi), len(names)))
    for got in passes(_stats_chunk, items, (cfg, parts, context_matrix), beside_its_parts):
        stats += got["stats"]
        for pos, row in got["mi_rows"]:
            mi_rows[pos] = row
    bar.update(len(chunks) - len(listing))
    scaler, scores, chosen, span = choose_features(cfg, names, stats, mi_rows, labels["train"][mi])
    counts_before = {s: np.bincount(labels[s], minlength=2).tolist() for s in SPLITS}
    if cfg.balance:
        keep = fitting.oversample(np.arange(len(tr)), labels["train"], cfg.seed)
        index["train"], labels["train"] = tr[keep], labels["train"][keep]

    bar.set_postfix_str("writing")
    vol = volatility_columns(close, cfg.horizon) if cfg.auxiliary == "volatility" else None
    arrays = itertools.chain([("forward_returns", fwd), ("close", close)], split_arrays(calendar, index, labels, vol))
    meta = panel_metadata(cfg, Universe(calendar, tickers, names, facts, left_out), plan, index, counts_before, labels,
                          chosen, scores, scaler, span)
    if vol is not None:
        meta["auxiliary"] = auxiliary_record(cfg, vol, tr)

    def fill(tmp: Path) -> None:
        features = tmp / "features.npy"
        np.lib.format.open_memmap(features, "w+", np.float32, (n, days, len(chosen))).flush()
        items = ((number, int(start), xs_for(number, start, len(t))) for (number, t), start in zip(listing, offsets))
        target = Rows(features, np.load(features, mmap_mode="r").offset, days * len(chosen) * 4)
        for start, scaled in zip(offsets, passes(_write_chunk, items, (parts, target, context_matrix, scaler, chosen),
                                                 beside_its_parts)):
            if scaled is not None:  # from a task on another node
                target.write(int(start), scaled)
            del scaled  # a result from the object store: let it go before the next arrives
        matrix = np.load(features, mmap_mode="r")
        # The first training window, cut as every consumer cuts it: the layout's self-check.
        assert cut_windows(matrix, index["train"][:1], cfg.seq_len).shape == (1, cfg.seq_len, len(chosen))

    write_panel(out, arrays, meta, fill)
    bar.close()
    return meta


def _write_part(path: Path, where, values: np.ndarray) -> None:
    part = np.load(path, mmap_mode="r+")
    part[where] = values
    part.flush()
    del part  # unmapped: its pages leave this process


def _rows_of(path: Path, start: int, count: int) -> np.ndarray:
    """Rows of a driver-side memory-mapped part, copied out (the map closed after)."""
    part = np.load(path, mmap_mode="r")
    rows = np.array(part[start:start + count])
    del part
    return rows


# -- the passes (each runs where a task runs: it gets everything it needs as arguments) ---------

def chunk_members(cfg: DataConfig, c: Chunk) -> tuple[dict[str, pd.DataFrame], dict[str, dict], dict[str, int]]:
    """A chunk's instruments read, validated and filtered as the in-memory build does: {ticker:
    frame} of those kept, the files read, and {ticker: rows} of those too short."""
    facts: dict[str, dict] = {}
    if c.columns is not None:  # the close panel's columns, parsed as the whole file would be
        source = dataclasses.replace(cfg.sources[cfg.panel.source], include=c.columns)
        raw = read_table(c.table, cfg.panel.source, [source.columns["date"], *c.columns])
        members = close_panel_members(parse_table(source, raw, str(c.table), cfg.panel.source))
    elif c.files is not None:
        members, facts = file_members(cfg, c.files)
    else:
        source = cfg.sources[cfg.panel.source]
        wanted = [*source.columns.values(), cfg.panel.ticker_column]
        if c.values is not None:
            raw = read_table(c.table, cfg.panel.source, wanted, rows_with=(cfg.panel.ticker_column, c.values))
        else:  # a bucket of a long CSV: its rows' positions in the file become the index again
            raw = pd.read_parquet(c.table)
            raw = raw.set_index(raw.pop("__row").to_numpy())
        members = long_members(cfg, raw, str(cfg.source_path(cfg.panel.source)))
    left_out: dict[str, int] = {}
    kept = {t: f for t, f in ((t, kept_member(cfg, t, members[t], left_out)) for t in sorted(members)) if f is not None}
    return kept, facts, left_out


def _read_chunk(cfg: DataConfig, parts: Parts, c: Chunk) -> dict:
    kept, facts, left_out = chunk_members(cfg, c)
    with open(parts.folder() / f"read-{c.number}.pkl", "wb") as fh:
        pickle.dump({t: adjusted_ohlc(f) for t, f in kept.items()}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return {"tickers": list(kept), "days": union_of_days([f.index.to_numpy() for f in kept.values()]), "facts": facts,
            "left_out": left_out, "node": this_node()}


def _remove_parts(parts: Parts, node: str) -> None:
    shutil.rmtree(storage.scratch("panel-parts") / parts.build, ignore_errors=True)


def _features_chunk(cfg: DataConfig, parts: Parts, calendar: pd.DatetimeIndex, context: dict, number: int) -> dict:
    scratch = parts.folder()
    path = scratch / f"read-{number}.pkl"
    with open(path, "rb") as fh:
        adjusted = pickle.load(fh)
    n, days = len(adjusted), len(calendar)
    own = None  # (instruments, days, own features), filled one instrument at a time
    xs_base, close, complete = np.empty((n, days, len(XS_BASE))), np.empty((n, days)), np.empty((n, days), bool)
    for j, (t, f) in enumerate(adjusted.items()):
        x, close[j], names = instrument_candidates(t, f, calendar, context)
        if own is None:
            own = np.lib.format.open_memmap(scratch / f"own-{number}.npy", "w+", np.float64,
                                            (n, days, len(names) - len(context)))
            base = [names.index(b) for b in XS_BASE]
        own[j] = x[:, :own.shape[2]]
        xs_base[j], complete[j] = x[:, base], np.isfinite(x).all(axis=-1)
    own.flush()
    np.save(scratch / f"close-{number}.npy", close)  # its input stays: a retried task reads it again
    return {"names": names, "xs_base": xs_base, "close": close, "complete": complete}


class XsRows(NamedTuple):
    """Where a chunk's cross-sectional rows are in the driver's ``xs.npy`` (for a task beside it)."""

    start: int
    count: int


def _candidates(parts: Parts, context_matrix: np.ndarray, number: int, xs: np.ndarray | XsRows):
    """Each instrument's full candidate rows, as the in-memory cube holds them (``xs``: the
    chunk's cross-sectional rows, sent by the driver, or where to read them beside it)."""
    if isinstance(xs, XsRows):
        xs = np.load(parts.beside_output / "xs.npy", mmap_mode="r")[xs.start:xs.start + xs.count]
    own = np.load(parts.folder() / f"own-{number}.npy", mmap_mode="r")
    close = np.load(parts.folder() / f"close-{number}.npy")
    for j in range(len(own)):
        absent = ~np.isfinite(close[j])
        ctx = np.where(absent[:, None], np.nan, context_matrix)
        yield j, np.concatenate([own[j], ctx, xs[j]], axis=1)


def _stats_chunk(cfg: DataConfig, parts: Parts, context_matrix: np.ndarray, item) -> dict:
    number, xs, train_rows, wanted = item
    stats, mi_rows = [], []
    for j, x in _candidates(parts, context_matrix, number, xs):
        stats.append(fitting.train_stats(x, train_rows[j][0], train_rows[j][1], cfg.seq_len))
        mi_rows += [(pos, x[row]) for pos, jj, row in wanted if jj == j]
    return {"stats": stats, "mi_rows": mi_rows}


@dataclasses.dataclass(frozen=True)
class Rows:
    """The dataset's ``features.npy`` on the driver's disk, written an instrument's rows at a
    time through the file (not a memory map, whose written pages would stay in the writer's
    resident set)."""

    path: Path
    data_at: int  # where the array starts, past the .npy header
    row_bytes: int  # one instrument's (days x chosen) float32 values

    def write(self, start: int, scaled: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(scaled, np.float32)).cast("B")
        at, done = self.data_at + start * self.row_bytes, 0
        with open(self.path, "r+b") as fh:
            while done < len(data):  # one call writes at most about 2 GiB on Linux
                done += os.pwrite(fh.fileno(), data[done:], at + done)


def _write_chunk(parts: Parts, target: Rows, context_matrix: np.ndarray, scaler: fitting.Scaler, chosen: np.ndarray,
                 item) -> np.ndarray | None:
    """The chunk's chosen, scaled features (instruments, days, chosen): written into the dataset
    by a task beside it (on the driver's node), else returned for the driver to write (through
    the object store, from another node)."""
    number, start, xs = item
    scaled = np.stack([scaled_matrix(x, scaler, chosen) for _, x in _candidates(parts, context_matrix, number, xs)])
    if parts.driver_node is None or this_node() in (None, parts.driver_node):
        target.write(start, scaled)
        return None
    return scaled
