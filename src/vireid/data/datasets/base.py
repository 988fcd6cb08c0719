"""Shared machinery of the dataset loaders: errors, options, layout and file checks.

Every loader reads a benchmark release exactly as its owners ship it
(docs/datasets.md) and returns a :class:`~vireid.data.types.ReIDData`. Before
any work it checks the layout and, when something is missing, raises one
:class:`DatasetLayoutError` that names every missing path and prints the
expected tree.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from vireid.data.types import EvalSplit, Modality, ReIDData, Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File types counted as images when a loader lists a folder (SYSU-MM01, LLCM test folders)."""

MAX_LISTED = 5
"""How many offending paths an error message lists before giving the count."""


class DatasetError(ValueError):
    """Base class of the errors a loader raises about its input."""


class DatasetLayoutError(DatasetError):
    """The dataset root is missing, has the wrong layout, or lacks an index file.

    ``missing`` lists the absolute paths that were expected but not found.
    """

    def __init__(self, message: str, missing: Sequence[str] = ()):
        super().__init__(message)
        self.missing = list(missing)


class IndexFormatError(DatasetLayoutError):
    """An index/info file exists but a line of it cannot be read (names file and line)."""


class MissingImagesError(DatasetLayoutError):
    """Image files referenced by an index file do not exist."""


class OutsideRootError(IndexFormatError):
    """A path read from an index file leads outside the dataset root."""


class DatasetOptionError(DatasetError):
    """An unknown loader option, or a value it cannot take (names the key)."""


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One loader option: its default, a one-line help, and a validator.

    ``check(value)`` returns the normalised value or raises ``ValueError``
    with a message that does not need to repeat the key.
    """

    default: Any
    help: str
    check: Callable[[Any], Any] | None = None


def one_of(*choices: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"got {value!r}; expected one of {', '.join(map(repr, choices))}")
        return value

    return check


def int_in(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"got {value!r}; expected an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"got {value}; expected an integer {bound}")
        return value

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"got {value!r}; expected true or false")
    return value


def optional_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"got {value!r}; expected a folder path")
    return os.path.abspath(os.path.expanduser(os.fspath(value)))


def directions_of(allowed: Sequence[str]) -> Callable[[Any], tuple[str, ...]]:
    """Validator for ``directions``: a direction, a list of them, or ``"both"``/``None`` for all."""

    def check(value: Any) -> tuple[str, ...]:
        if value is None or value in ("both", "all"):
            return tuple(allowed)
        items = [value] if isinstance(value, str) else list(value)
        unknown = [v for v in items if v not in allowed]
        if unknown or not items:
            raise ValueError(f"got {value!r}; expected one or more of {', '.join(allowed)}")
        return tuple(d for d in allowed if d in items)

    return check


VERIFY_FILES_OPTION = Option(
    True,
    "check that every image file an index refers to exists (one folder listing per folder)",
    boolean,
)


# ---------------------------------------------------------------------------
# Reading index files
# ---------------------------------------------------------------------------


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as err:
        raise IndexFormatError(f"{path} is not a UTF-8 text file ({err})") from None
    except OSError as err:
        raise DatasetLayoutError(f"cannot read {path}: {err.strerror}", [path]) from None


def read_lines(path: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text file, stripped, with their 1-based line numbers."""
    return [
        (number, line.strip())
        for number, line in enumerate(read_text(path).splitlines(), start=1)
        if line.strip()
    ]


def read_int_list(path: str) -> list[int]:
    """Integers separated by commas and/or white space (SYSU/LLCM ``*_id.txt``, VCM ``query_IDX.txt``).

    The reference reads the first line of the id files and splits it on
    commas; accepting any mix of commas and white space reads the same files.
    """
    values = []
    for number, line in read_lines(path):
        for token in re.split(r"[,\s]+", line):
            if not token:
                continue
            try:
                values.append(int(token))
            except ValueError:
                raise IndexFormatError(
                    f"{path}, line {number}: {token!r} is not an integer"
                ) from None
    if not values:
        raise IndexFormatError(f"{path} lists no identities")
    return values


def read_path_label_index(path: str) -> list[tuple[int, str, int]]:
    """``<relative path> <label>`` lines (RegDB and LLCM ``idx/*.txt``) -> (line, path, label)."""
    rows = []
    for number, line in read_lines(path):
        fields = line.split()
        if len(fields) != 2:
            raise IndexFormatError(
                f"{path}, line {number}: expected '<relative image path> <label>', got {line!r}"
            )
        try:
            label = int(fields[1])
        except ValueError:
            raise IndexFormatError(
                f"{path}, line {number}: label {fields[1]!r} is not an integer"
            ) from None
        rows.append((number, fields[0], label))
    if not rows:
        raise IndexFormatError(f"{path} is empty")
    return rows


def relative_parts(rel_path: str) -> list[str]:
    """Components of a path written in an index file (``/`` or ``\\`` separated)."""
    return [p for p in re.split(r"[\\/]+", rel_path) if p not in ("", ".")]


def under(prefix: str, rel_path: str) -> str:
    """``prefix`` (a folder ending in the separator) joined with a ``/``-separated relative path.

    Plain concatenation for clean paths (this runs for every frame of a video
    dataset); anything unusual goes through :func:`relative_parts`.
    """
    if "\\" in rel_path or rel_path.startswith(("/", "./")) or "//" in rel_path or "/./" in rel_path:
        rel_path = "/".join(relative_parts(rel_path))
    return prefix + (rel_path if os.sep == "/" else rel_path.replace("/", os.sep))


def inside_root(root: str, path: str, where: str) -> str:
    """``path`` (a path built from an index file entry) if it lies inside ``root``, else
    :class:`OutsideRootError` naming ``where`` (file and line).

    The check is on the path as written, after ``..`` and ``.`` are resolved: an
    absolute path or one that climbs above the root is refused; symbolic links
    inside the root are followed as usual (a root may link its folders elsewhere).
    """
    root = os.path.join(root, "")
    if path.startswith(root) and ".." not in path[len(root):] and "//" not in path:
        return path  # the common case, without normalising (every frame of a video set)
    normal = os.path.normpath(path)
    if os.path.join(normal, "").startswith(root) and normal != root.rstrip(os.sep):
        return path
    raise OutsideRootError(
        f"{where}: {path!r} is outside the dataset root {root.rstrip(os.sep)}; index files "
        "must name files inside the root"
    )


def parse_int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise IndexFormatError(f"{where}: {what} {text!r} is not an integer") from None


# ---------------------------------------------------------------------------
# Files on disk
# ---------------------------------------------------------------------------


class FileChecker:
    """Answers "does this file exist?" with one directory listing per folder.

    Checking a few hundred thousand frames with one ``stat`` each is slow on
    network file systems; listing each folder once is not.
    """

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        listing = self._listings.get(folder)
        if listing is None:
            try:
                listing = frozenset(os.listdir(folder))
            except OSError:
                listing = frozenset()
            self._listings[folder] = listing
        return name in listing

    def missing(self, paths: Iterable[str]) -> list[str]:
        return [p for p in paths if not self.exists(p)]


def raise_if_missing(missing: Sequence[str], index_file: str, title: str) -> None:
    """One :class:`MissingImagesError` naming the first few missing files and the count."""
    if not missing:
        return
    shown = "\n".join(f"  {p}" for p in missing[:MAX_LISTED])
    more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    raise MissingImagesError(
        f"{title}: {len(missing)} image file(s) listed in {index_file} do not exist:\n"
        f"{shown}{more}",
        missing,
    )


def list_images(folder: str) -> tuple[list[str], list[str]]:
    """Sorted image file names of a folder, and the other entries (ignored).

    The reference loaders take ``sorted(os.listdir(folder))``; we keep that
    order but skip hidden files and non-images, which the caller reports.
    """
    images, ignored = [], []
    for name in sorted(os.listdir(folder)):
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
            images.append(name)
        else:
            ignored.append(os.path.join(folder, name))
    return images, ignored


def labels_by_rank(pids: Iterable[int]) -> dict[int, int]:
    """Contiguous training labels: the rank of each identity in ascending order."""
    return {pid: label for label, pid in enumerate(sorted(set(pids)))}


def relabel(samples: Sequence[Sample], labels: dict[int, int]) -> list[Sample]:
    return [
        Sample(s.path, s.pid, s.camera, s.modality, labels[s.pid]) for s in samples
    ]


def check_label_column(
    rows: Sequence[tuple[str, int, int]], title: str
) -> int:
    """Checks training labels read from an index against the identities they belong to.

    ``rows`` are ``(where, pid, label)``. The labels must map one-to-one onto
    identities and be ``0..n-1`` (the reference uses them directly as class
    indices). Returns ``n``.
    """
    pid_of_label: dict[int, tuple[int, str]] = {}
    label_of_pid: dict[int, tuple[int, str]] = {}
    for where, pid, label in rows:
        if label in pid_of_label and pid_of_label[label][0] != pid:
            other_pid, other_where = pid_of_label[label]
            raise IndexFormatError(
                f"{title}: label {label} is given to identity {pid} ({where}) and to "
                f"identity {other_pid} ({other_where})"
            )
        if pid in label_of_pid and label_of_pid[pid][0] != label:
            other_label, other_where = label_of_pid[pid]
            raise IndexFormatError(
                f"{title}: identity {pid} has label {label} ({where}) and label "
                f"{other_label} ({other_where})"
            )
        pid_of_label[label] = (pid, where)
        label_of_pid[pid] = (label, where)
    num = len(pid_of_label)
    if sorted(pid_of_label) != list(range(num)):
        raise IndexFormatError(
            f"{title}: training labels must be 0..{num - 1}; got "
            f"{min(pid_of_label)}..{max(pid_of_label)} with gaps"
        )
    return num


# ---------------------------------------------------------------------------
# The loader base class
# ---------------------------------------------------------------------------


class DatasetLoader:
    """Base of the five loaders. Subclasses set the class attributes and ``_load``.

    ``name`` is the registry key, ``title`` the dataset's published name,
    ``protocol`` the key of :data:`vireid.data.protocols.PROTOCOLS`,
    ``EXPECTED_TREE`` the layout printed in errors, ``OPTIONS`` the accepted
    keyword options with their defaults.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    protocol: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    EXPECTED_TREE: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, root: str | os.PathLike[str], **options: Any):
        if root is None or (isinstance(root, str) and not root.strip()):
            raise DatasetLayoutError(
                f"{self.title}: no dataset root given.\nExpected layout:\n{self.EXPECTED_TREE}"
            )
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.options = self.resolve_options(options)
        self.checker = FileChecker()

    # -- options ---------------------------------------------------------
    @classmethod
    def resolve_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise DatasetOptionError(
                f"{cls.title}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(sorted(cls.OPTIONS))}"
            )
        resolved = {}
        for key, opt in cls.OPTIONS.items():
            value = options.get(key, opt.default)
            if opt.check is not None:
                try:
                    value = opt.check(value)
                except ValueError as err:
                    raise DatasetOptionError(f"{cls.title}: option {key!r}: {err}") from None
            resolved[key] = value
        return resolved

    # -- layout ----------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def required_paths(self) -> list[str]:
        """Relative paths that must exist; a trailing ``/`` marks a folder."""
        return []

    def layout_error(self, problem: str, missing: Sequence[str] = ()) -> DatasetLayoutError:
        listed = "".join(f"\n  missing: {p}" for p in missing)
        hint = self._hint()
        return DatasetLayoutError(
            f"{self.title}: {problem}{listed}\n"
            f"Expected layout (the top folder is the root you pass):\n{self.EXPECTED_TREE.rstrip()}"
            + (f"\n{hint}" if hint else ""),
            missing,
        )

    def _missing_under(self, base: str) -> list[str]:
        missing = []
        for rel in self.required_paths():
            full = os.path.join(base, rel.rstrip("/"))
            ok = os.path.isdir(full) if rel.endswith("/") else os.path.isfile(full)
            if not ok:
                missing.append(full + ("/" if rel.endswith("/") else ""))
        return missing

    def _hint(self) -> str:
        """Suggests a sub-folder of the given root that has the expected layout."""
        if not os.path.isdir(self.root):
            return ""
        try:
            children = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError:
            return ""
        for entry in children:
            if entry.is_dir() and not self._missing_under(entry.path):
                return f"Hint: {entry.path} has this layout; pass it as the root."
        return ""

    def check_layout(self) -> None:
        """Raises one :class:`DatasetLayoutError` naming every missing path."""
        if not os.path.exists(self.root):
            raise self.layout_error(f"dataset root {self.root} does not exist.", [self.root])
        if not os.path.isdir(self.root):
            raise self.layout_error(f"dataset root {self.root} is not a folder.", [self.root])
        missing = self._missing_under(self.root)
        if missing:
            raise self.layout_error(
                f"the folder {self.root} does not have the expected layout;"
                f" {len(missing)} path(s) are missing:",
                missing,
            )

    # -- loading ---------------------------------------------------------
    def load(self) -> ReIDData:
        self.check_layout()
        data = self._load()
        data.extra.setdefault("options", dict(self.options))
        data.extra.setdefault("protocol", self.protocol)
        return data

    def _load(self) -> ReIDData:  # pragma: no cover - abstract
        raise NotImplementedError

    def inside(self, path: str, where: str) -> str:
        """``path`` if it lies inside the root, else :class:`OutsideRootError` (:func:`inside_root`)."""
        return inside_root(self.root, path, where)

    def verify(self, paths: Iterable[str], index_file: str) -> None:
        """Raises :class:`MissingImagesError` if any of ``paths`` is absent (option ``verify_files``)."""
        if self.options.get("verify_files", True):
            raise_if_missing(self.checker.missing(paths), index_file, self.title)

    def warn_ignored(self, ignored: Sequence[str]) -> None:
        if ignored:
            shown = ", ".join(ignored[:MAX_LISTED])
            warnings.warn(
                f"{self.title}: ignored {len(ignored)} non-image file(s) in image folders: {shown}"
                + (" ..." if len(ignored) > MAX_LISTED else ""),
                stacklevel=3,
            )

    def split(
        self,
        name: str,
        query: Sequence[Sample],
        gallery: Sequence[Sample],
        direction: str,
        trial: int = 0,
    ) -> EvalSplit:
        return EvalSplit(
            protocol=self.protocol,
            name=name,
            query=tuple(query),
            gallery=tuple(gallery),
            trial=trial,
            direction=direction,
        )


def modality_name(modality: Modality) -> str:
    return "visible" if modality == Modality.VISIBLE else "infrared"
