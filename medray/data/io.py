"""Files behind one interface: local paths and ``s3://`` / ``gs://`` / ``file://`` URIs.

Readers and the preprocess job never call ``open`` directly; they go through these
helpers, which use pyarrow's filesystems, so that the same config runs on a laptop
(local paths) and on a cluster (object storage) with only the paths changed.

A *location* is a string: an absolute local path or a URI. :func:`resolve_location`
turns what a user wrote in a config (``~/x``, ``$MEDRAY_HOME/x``, ``../shared/data``)
into one.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from pathlib import Path

import pyarrow.fs as pafs

from medray.paths import medray_home, repo_root

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
SOURCE_ROOT_ENV = "MEDRAY_SOURCE_ROOT"


class DataFileError(OSError):
    """A data file could not be read or written; the message names the file."""


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` locations (object stores, ``file://``)."""
    return bool(_URI.match(location))


def resolve_location(raw: str, base: str | Path | None = None) -> str:
    """Absolute path or URI for a location written in a config.

    ``$MEDRAY_HOME`` / ``${MEDRAY_HOME}`` expand to MedRay's state root, ``~`` to the
    home folder, other ``$VARS`` from the environment. A relative path is taken relative
    to ``base``, else to ``$MEDRAY_SOURCE_ROOT`` (set by ``medray job submit`` to the
    checkout the job was submitted from), else to the repository root, so that
    ``../shared/data/vqa_rad`` means the same folder under ``ray job submit`` (whose
    working dir is a copy) as in a local run.
    """
    if not raw:
        raise ValueError("empty location")
    if is_uri(raw):
        return raw
    text = raw.replace("${MEDRAY_HOME}", str(medray_home())).replace(
        "$MEDRAY_HOME", str(medray_home())
    )
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    if not path.is_absolute():
        root = base or os.environ.get(SOURCE_ROOT_ENV) or repo_root()
        path = Path(root) / path
    return str(path.resolve())


@functools.lru_cache(maxsize=64)
def _filesystem(scheme_and_authority: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(scheme_and_authority or "/")
    return fs


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path inside it)`` for a location (cached per bucket)."""
    if not is_uri(location):
        return _filesystem(""), location
    scheme, rest = location.split("://", 1)
    if scheme == "file":
        return _filesystem(""), "/" + rest.lstrip("/")
    authority = rest.split("/", 1)[0]
    fs = _filesystem(f"{scheme}://{authority}")
    _, path = pafs.FileSystem.from_uri(location)
    return fs, path


def join(location: str, *parts: str) -> str:
    """Join path parts onto a location with ``/`` (valid for paths and URIs)."""
    return posixpath.join(location, *parts)


def is_local(location: str) -> bool:
    """True for paths and ``file://`` URIs: a filesystem with folders and atomic renames."""
    return isinstance(filesystem(location)[0], pafs.LocalFileSystem)


def make_dirs(location: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def file_size(location: str) -> int | None:
    """Size in bytes, or None when the file does not exist."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def read_bytes(location: str) -> bytes:
    """The whole file. Raises FileNotFoundError when it does not exist."""
    if not is_uri(location) or location.startswith("file://"):
        # Local files: plain open() is several times faster than pyarrow's stream per call.
        path = location[len("file://") :] if location.startswith("file://") else location
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(location) from None
        except IsADirectoryError as e:
            raise DataFileError(f"cannot read {location}: it is a folder") from e
        except OSError as e:
            raise DataFileError(f"cannot read {location}: {e}") from e
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path, compression=None) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(location) from e
        raise DataFileError(f"cannot read {location}: {e}") from e


def read_text(location: str, encoding: str = "utf-8") -> str:
    return read_bytes(location).decode(encoding)


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file, creating parent folders on local filesystems."""
    fs, path = filesystem(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path, compression=None) as f:
        f.write(data)


def list_files(location: str, recursive: bool = True) -> list[str]:
    """Files under a folder location, as locations, sorted."""
    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    prefix = location.rstrip("/")
    base = path.rstrip("/")
    return sorted(
        prefix + info.path[len(base) :] for info in infos if info.type == pafs.FileType.File
    )


def delete_dir(location: str) -> None:
    """Remove a folder and everything in it (no error when it is already gone)."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
