"""Source adapters: each turns one odds format into canonical candidate quotes (no Dagster).

Every adapter module exposes `SOURCE` (its name) and
`parse_file(path, *, keep_in_play=False, ...) -> ParseResult`; a file is one load
(`load_id_for(SOURCE, path)`: the store's function, re-exported here for the adapters), so
re-ingesting a file replaces what it wrote.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

# The store owns load ids; one function makes them (the path, not the name: see there).
from odds_pipeline.ingestion.store import load_id_for as load_id_for
from odds_pipeline.market.quotes import SourceFormatError


def expand_paths(patterns: list[str] | tuple[str, ...], *, base: Path | None = None) -> list[Path]:
    """Files named by paths or globs, sorted and de-duplicated; a pattern matching nothing is an error."""
    found: list[Path] = []
    for pattern in patterns:
        raw = Path(pattern).expanduser()
        if not raw.is_absolute() and base is not None:
            raw = base / raw
        if any(ch in str(raw) for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(raw), recursive=True))
            matches = [m for m in matches if m.is_file()]
        elif raw.is_dir():
            matches = sorted(p for p in raw.iterdir() if p.is_file())
        else:
            matches = [raw] if raw.is_file() else []
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        found.extend(m.resolve() for m in matches)
    seen: set[Path] = set()
    unique = []
    for path in found:
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return unique


# --------------------------------------------------------------------------------------
# CSV files (football-data, SBR): read whole with the csv module and checked for shape
# before any column is interpreted, so a bad row fails the file with its line number
# instead of being shifted, padded or renamed silently (as pandas' reader does).
# --------------------------------------------------------------------------------------

FALLBACK_ENCODING = "cp1252"  # what Excel on Windows writes; a superset of printable latin-1
# A valid UTF-8 multi-byte sequence: in a file that is not UTF-8 it hints at mixed encodings.
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}")


@dataclass
class CsvTable:
    """A CSV file whose every data row has the header's field count (see `read_csv_table`)."""

    header: list[str]  # stripped names; an empty name becomes "Unnamed: <position>"
    header_line: int
    rows: list[list[str]]  # one per record, blank lines left out, len(header) cells each
    lines: list[int]  # the line on which each record starts (the first line is 1)
    encoding: str  # "utf-8", "utf-8 with BOM" or FALLBACK_ENCODING
    truncated: int | None = None  # index in `rows` of a cut-short last row (padded with "")
    truncated_text: str | None = None  # that row as it stands in the file
    warnings: list[str] = field(default_factory=list)


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode_text(path: Path, data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 (BOM optional) first, else cp1252, the site's other encoding.

    A NUL byte means binary data or UTF-16, which cp1252 would "decode" into garbage.
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SourceFormatError(
            str(path),
            _line_at(data, nul),
            "a NUL byte: binary data or UTF-16, not UTF-8 or cp1252 text",
        )
    bom = data.startswith(codecs.BOM_UTF8)
    body = data[len(codecs.BOM_UTF8) :] if bom else data
    try:
        return body.decode("utf-8"), "utf-8 with BOM" if bom else "utf-8"
    except UnicodeDecodeError as utf8:
        try:
            return body.decode(FALLBACK_ENCODING), FALLBACK_ENCODING
        except UnicodeDecodeError as exc:
            offset = exc.start + (len(codecs.BOM_UTF8) if bom else 0)
            raise SourceFormatError(
                str(path),
                _line_at(data, offset),
                f"neither UTF-8 text ({utf8.reason}) nor {FALLBACK_ENCODING} "
                f"(byte 0x{data[offset]:02x} means nothing in it)",
            ) from None


def read_csv_table(path: Path, *, skip_initial_space: bool = False) -> CsvTable:
    """Read a CSV file; any row whose field count differs from the header's fails the file.

    The exception is a last row cut short (fewer fields, or ending inside a quoted cell):
    that is what a truncated download leaves, so it is kept as `truncated` for the adapter
    to reject with reason `truncated_row`, and a warning says so. Rows of empty cells (blank
    lines, `,,,,` filler) hold no data and are exempt. A quoted cell spanning lines is
    refused: these formats never have one, and a stray quote would swallow the rows after it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(
            str(path), None, f"cannot read the file, so no line to name: {exc.strerror or exc}"
        ) from None
    if not data:
        raise SourceFormatError(
            str(path), None, "empty file (0 bytes), so no line to name: no header row"
        )
    text, encoding = decode_text(path, data)
    name = path.name
    warnings: list[str] = []
    if encoding == FALLBACK_ENCODING:
        warnings.append(f"{name}: not UTF-8, read as {FALLBACK_ENCODING}")
        if _UTF8_SEQUENCE.search(data):
            warnings.append(
                f"{name}: read as {FALLBACK_ENCODING} but also holds UTF-8 sequences "
                "(mixed encodings?): some names may be garbled"
            )

    physical = io.StringIO(text, newline="").readlines()  # split as the csv module splits
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=skip_initial_space)
    records: list[tuple[int, int, list[str]]] = []  # (first line, last line, cells)
    start = 1
    try:
        for cells in reader:
            if cells:  # [] is a blank line
                records.append((start, reader.line_num, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SourceFormatError(str(path), start, f"malformed CSV: {exc}") from None

    def blank(cells: list[str]) -> bool:
        return all(not c.strip() for c in cells)

    top = next((i for i, (_, _, cells) in enumerate(records) if not blank(cells)), None)
    if top is None:
        raise SourceFormatError(
            str(path),
            None,
            f"no header row: all {len(physical)} line(s) are blank, so no line to name",
        )
    header_line, header_end, header_cells = records[top]
    header = [c.strip() for c in header_cells]
    width = len(header)
    seen: dict[str, list[int]] = {}
    for position, column in enumerate(header, start=1):
        if column:  # empty names are header filler (`,,,` at the end), never read
            seen.setdefault(column, []).append(position)
    duplicated = {c: p for c, p in seen.items() if len(p) > 1}
    if duplicated:
        where = "; ".join(f"{c!r} in columns {p}" for c, p in duplicated.items())
        raise SourceFormatError(
            str(path), header_line, f"duplicate column names, each must be unique: {where}"
        )
    header = [c or f"Unnamed: {i}" for i, c in enumerate(header)]

    def open_quote_at_end(first: int) -> bool:
        """Does the file end inside a quoted cell opened on line `first`?"""
        tail = io.StringIO("".join(physical[first - 1 :]), newline="")
        try:
            for _ in csv.reader(tail, skipinitialspace=skip_initial_space, strict=True):
                pass
        except csv.Error as exc:  # strict mode also refuses `"x" ,`, which is no cut
            return "unexpected end of data" in str(exc)
        return False

    if header_end > header_line:
        raise SourceFormatError(
            str(path), header_line, "the header row spans lines: a stray or unclosed quote"
        )
    last = len(records) - 1  # a cut-short row must end the file: no filler after it
    table = CsvTable(
        header=header,
        header_line=header_line,
        rows=[],
        lines=[],
        encoding=encoding,
        warnings=warnings,
    )
    rows, lines = table.rows, table.lines
    for i in range(top + 1, len(records)):
        first, end, cells = records[i]
        if end > first:
            raise SourceFormatError(
                str(path),
                first,
                f"a quoted cell runs from line {first} to line {end}: a stray or unclosed "
                "quote (cells of this format never hold line breaks)",
            )
        count = len(cells)
        if count == width and i != last:  # the common case, kept cheap
            rows.append(cells)
            lines.append(first)
            continue
        if blank(cells):
            pass  # no data in it, whatever its field count
        elif i == last and (count < width or (count == width and open_quote_at_end(first))):
            table.truncated = len(rows)
            table.truncated_text = physical[first - 1].rstrip("\r\n")
            warnings.append(
                f"{name}: line {first}, the last row, is cut short ({count} of {width} fields"
                f"{', ending inside a quoted cell' if count == width else ''}): a truncated "
                "download? Its prices are rejected as truncated_row"
            )
        elif count != width:
            raise SourceFormatError(
                str(path),
                first,
                f"{count} fields where the header (line {header_line}) has {width}: "
                + (
                    "an unquoted comma inside a cell?"
                    if count > width
                    else "a missing field, or a line cut short before the end of the file?"
                ),
            )
        rows.append(cells if count == width else (cells + [""] * width)[:width])
        lines.append(first)
    if table.truncated is None and rows and not text.endswith(("\n", "\r")):
        warnings.append(
            f"{name}: no line break after the last line ({records[-1][0]}): if the download "
            "was cut there, its last cell may be incomplete"
        )
    return table
