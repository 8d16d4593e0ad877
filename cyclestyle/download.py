"""``cyclestyle download``: the reference CycleGAN's published generators and unpaired datasets.

Names and addresses are those of the reference implementation's download scripts
(junyanz/pytorch-CycleGAN-and-pix2pix: ``scripts/download_cyclegan_model.sh``,
``datasets/download_cyclegan_dataset.sh``); ``--url`` points at a mirror instead. No checksums are
published, so the sha256 of what was fetched is printed and recorded (in the imported model's metadata,
in the dataset folder's ``download.json``) and can be checked against a known value with ``--sha256``.

The transfer is Python's own HTTP client (urllib): torch.hub's downloader cannot resume, and these
files are up to 1.5 GB on university servers. A download goes to ``FILE.part``; a rerun after an
interruption asks for the rest with an HTTP Range request (and starts over if the server ignores it); the
complete file is renamed into place, so a ``.pth`` or ``.zip`` under its final name is always whole.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

MODEL_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
DATASET_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"
# Each translates the first domain of its name into the second; style_* turn photos into paintings.
MODELS = ("style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh", "monet2photo", "horse2zebra",
          "zebra2horse", "apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite",
          "iphone2dslr_flower", "sat2map", "map2sat", "facades_photo2label", "facades_label2photo",
          "cityscapes_photo2label", "cityscapes_label2photo")
DATASETS = ("monet2photo", "cezanne2photo", "ukiyoe2photo", "vangogh2photo", "horse2zebra", "apple2orange",
            "summer2winter_yosemite", "iphone2dslr_flower", "maps", "facades", "ae_photos")
LAYOUT = ("trainA", "trainB", "testA", "testB")
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download that could not be done; the message says why and what to do (nothing half-written is left
    under the final name)."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline(url: str, reason: object) -> DownloadError:
    host = urlsplit(url).netloc or url
    return DownloadError(f"cannot reach {host} ({reason}): this machine looks offline, or the server is down. "
                         f"Fetch {url} on a machine with a network and copy it here, or pass --url for a mirror")


def fetch(url: str, target: str | Path, progress: bool = True, timeout: float = 60.0) -> str:
    """Download ``url`` to ``target`` (resuming ``target.part`` if there is one); return its sha256."""
    from tqdm.auto import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "cyclestyle", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is complete (or stale: start over)
            total = (err.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                return _finish(part, target)
            part.unlink()
            return fetch(url, target, progress, timeout)
        hint = "; check the name, or the --url" if err.code == 404 else ""
        raise DownloadError(f"{url}: the server answered HTTP {err.code} {err.reason}{hint}") from None
    except urllib.error.URLError as err:
        raise _offline(url, err.reason) from None
    except OSError as err:  # timeouts, resets before the first byte
        raise _offline(url, err) from None
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0  # a server that ignores Range sends the whole file again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        done = have
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                   desc=target.name, dynamic_ncols=True)
        try:
            with open(part, "ab" if resumed else "wb") as f, bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (http.client.IncompleteRead, OSError) as err:
            raise DownloadError(f"{url}: the transfer broke off after {done} of {total or '?'} bytes ({err!r}); "
                                f"rerun the same command to resume from there ({part} is kept)") from None
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{url}: the transfer broke off after {part.stat().st_size} of {total} bytes; rerun "
                            f"the same command to resume from there ({part} is kept)")
    return _finish(part, target)


def _finish(part: Path, target: Path) -> str:
    digest = sha256_of(part)
    os.replace(part, target)
    return digest


def check_sha256(path: Path, digest: str, expected: str | None) -> None:
    if expected and digest.lower() != expected.lower():
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise DownloadError(f"{path}: sha256 {digest} is not the expected {expected}; the file was moved to {bad} "
                            "and not used")


def _member_path(name: str) -> PurePosixPath:
    return PurePosixPath(name.replace("\\", "/"))


def extract_dataset(zip_path: str | Path, root: str | Path, name: str) -> Path:
    """Extract ``zip_path`` into ``root/name`` (the reference's zips hold ``name/trainA/...``; a zip without
    that top folder works too). Every member is checked before anything is written: one that would land
    outside the folder (``../``, an absolute path, a drive letter) refuses the whole archive."""
    zip_path, root = Path(zip_path), Path(root)
    staging = root / f".{name}.partial"
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(f"{zip_path} is not a readable zip file ({err}); delete it and download again") from None
    with archive:
        for member in archive.infolist():
            parts = _member_path(member.filename).parts
            if (member.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0])):
                raise DownloadError(f"{zip_path}: member {member.filename!r} would be written outside {root / name}; "
                                    "the archive was refused and nothing was extracted")
        shutil.rmtree(staging, ignore_errors=True)
        archive.extractall(staging)
    children = [c for c in staging.iterdir() if not c.name.startswith(("__MACOSX", "."))]
    top = children[0] if len(children) == 1 and children[0].is_dir() and children[0].name == name else staging
    final = root / name
    os.replace(top, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def download_dataset(name: str, root: str | Path = "datasets", url: str | None = None,
                     expected_sha256: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """``root/name/{trainA,trainB,testA,testB}`` and what was recorded in its ``download.json``."""
    _check_name(name, DATASETS, "dataset", url)
    root = Path(root)
    final = root / name
    if (final / "download.json").is_file():
        return final, {**json.loads((final / "download.json").read_text()), "already_there": True}
    if final.exists():
        raise DownloadError(f"{final} exists but was not written by a complete download; move it away and rerun")
    url = url or DATASET_URL.format(name=name)
    zip_path = root / f"{name}.zip"
    digest = fetch(url, zip_path, progress)
    check_sha256(zip_path, digest, expected_sha256)
    extract_dataset(zip_path, root, name)
    record = {"name": name, "url": url, "sha256": digest, "bytes": zip_path.stat().st_size,
              "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "missing_folders": [d for d in LAYOUT if not (final / d).is_dir()]}
    (final / "download.json").write_text(json.dumps(record, indent=2) + "\n")
    zip_path.unlink()  # extracted and recorded: the archive is only a second copy
    return final, record


def download_model(name: str, root: str | Path = "models", url: str | None = None,
                   expected_sha256: str | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Fetch ``root/name.pth`` and import it as ``root/name.safetensors`` (ready for ``translate``)."""
    from cyclestyle.reference import import_reference

    _check_name(name, MODELS, "model", url)
    root = Path(root)
    url = url or MODEL_URL.format(name=name)
    pth = root / f"{name}.pth"
    digest = sha256_of(pth) if pth.is_file() else fetch(url, pth, progress)
    check_sha256(pth, digest, expected_sha256)
    output, meta = import_reference(pth, root / f"{name}.safetensors", extra={"url": url})
    return output, {"name": name, "url": url, "sha256": digest, "file": str(pth), "model": meta["model"]}


def _check_name(name: str, known: tuple[str, ...], kind: str, url: str | None) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DownloadError(f"{kind} name {name!r} is not a plain name (e.g. {known[0]})")
    if name not in known and url is None:
        raise DownloadError(f"unknown {kind} {name!r}: the reference publishes {', '.join(known)} "
                            "(or pass --url for a file of another name)")
