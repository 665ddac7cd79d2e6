"""Build the sandbox image locally: a debootstrap root filesystem imported into Docker.

No image registry is needed. The tag is derived from the recipe (``recipe/recipe.json`` and
``recipe/entry.py``), so a changed recipe gives a new tag and ``build`` makes it, while an
unchanged one is found and skipped. The packages debootstrap downloads are kept as a tarball in
the data folder, and so is the root filesystem they install, so a rebuild after a change to
``entry.py`` only copies files and imports (seconds), and one after a change to the package list
does not download what it already has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).parent / "recipe"
"""The folder of the recipe: ``recipe.json`` and ``entry.py``."""

IMAGE_REPOSITORY = "nexusflow-sandbox"
"""The repository name of the sandbox image (the tag is the recipe hash)."""

DEFAULT_MIRROR = "http://deb.debian.org/debian"
"""The Debian mirror used when apt's sources name none for the recipe's suite."""

_BUILD_FORMAT = 1
"""Bumped when the build steps below change in a way that changes the image."""


def load_recipe() -> dict[str, Any]:
    """Return the parsed ``recipe.json``."""
    return json.loads((RECIPE_DIR / "recipe.json").read_text(encoding="utf-8"))


def recipe_hash() -> str:
    """Return a short hash of everything that defines the image."""
    digest = hashlib.sha256(f"format {_BUILD_FORMAT}\n".encode())
    for name in ("recipe.json", "entry.py"):
        digest.update(name.encode() + b"\0" + (RECIPE_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_tag() -> str:
    """Return the tag of the image this recipe builds, ``nexusflow-sandbox:<recipe hash>``."""
    return f"{IMAGE_REPOSITORY}:{recipe_hash()}"


def entry_command() -> list[str]:
    """Return the command that runs the entry program inside the image."""
    return ["/usr/bin/python3", "-I", "-S", "-u", load_recipe()["entry"]]


def apt_mirror(suite: str, sources: list[Path] | None = None) -> str:
    """Return the Debian mirror apt uses on this machine for ``suite`` (or the default one).

    Reads the one-line ``sources.list`` format and the deb822 ``*.sources`` format.
    """
    if sources is None:
        base = Path("/etc/apt")
        sources = [base / "sources.list", *sorted((base / "sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if (
                    "deb" in fields.get("types", "").split()
                    and suite in fields.get("suites", "").split()
                ):
                    uris = fields.get("uris", "").split()
                    if uris:
                        return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class BuildResult:
    """What ``build_image`` did."""

    tag: str
    built: bool
    """False when the image already existed and nothing was done."""
    seconds: float
    cache_hit: bool = False
    """Whether the debootstrap packages (or the installed root filesystem) came from the cache."""


def _run(cmd: list[str], **kwargs: Any) -> None:
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{cmd[0]} failed with status {proc.returncode}:\n{tail}")


def _customize(root: Path, recipe: dict[str, Any]) -> None:
    """Put the entry program in, strip set-id bits and drop what the sandbox never needs."""
    entry = root / recipe["entry"].lstrip("/")
    entry.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RECIPE_DIR / "entry.py", entry)
    entry.chmod(0o644)
    for rel in recipe.get("remove", []):
        target = root / rel.lstrip("/")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
            target.mkdir(mode=0o755)
    if recipe.get("strip_setuid", True):
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath) / name
                mode = path.lstat().st_mode
                if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                    path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))


def build_image(
    data_dir: Path, *, force: bool = False, client: Any = None, mirror: str | None = None
) -> BuildResult:
    """Build the sandbox image unless it exists; return its tag and what was done.

    Needs root (debootstrap) and a Docker engine. ``data_dir`` holds the package cache.
    """
    from .client import docker_client  # lazily: importing this module never imports docker

    started = time.monotonic()
    client = client or docker_client()
    tag = image_tag()
    if not force and image_exists(tag, client=client):
        return BuildResult(tag, built=False, seconds=time.monotonic() - started)
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed; run scripts/setup-docker.sh first")
    recipe = load_recipe()
    suite, variant = recipe["suite"], recipe["variant"]
    include = ",".join(recipe.get("include", []))
    mirror = mirror or apt_mirror(suite)
    cache_dir = Path(data_dir) / "sandbox"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{suite} {variant} {include}".encode()).hexdigest()[:12]
    cache = cache_dir / f"debootstrap-{suite}-{variant}-{key}.tgz"
    base = cache_dir / f"rootfs-{suite}-{variant}-{key}.tar"
    cache_hit = cache.exists() or base.exists()
    opts = [f"--variant={variant}", f"--include={include}"] if include else [f"--variant={variant}"]
    with tempfile.TemporaryDirectory(prefix="nexusflow-rootfs-", dir=cache_dir) as tmp:
        root = Path(tmp) / "root"
        if base.exists():  # the installed root filesystem of an earlier build
            root.mkdir()
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(base)])
        else:
            if not cache_hit:
                partial = cache.with_suffix(".partial.tgz")
                _run(
                    ["debootstrap", *opts, f"--make-tarball={partial}", suite, f"{tmp}/dl", mirror]
                )
                partial.replace(cache)
            _run(["debootstrap", *opts, f"--unpack-tarball={cache}", suite, str(root), mirror])
            partial_base = base.with_suffix(".partial.tar")
            _run(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "-C",
                    str(root),
                    "-cf",
                    str(partial_base),
                    ".",
                ]
            )
            partial_base.replace(base)
        _customize(root, recipe)
        archive = Path(tmp) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(archive), "."])
        changes = [f"ENV {k}={v}" for k, v in recipe.get("env", {}).items()]
        changes += [
            f"USER {recipe['user']}",
            "WORKDIR /tmp",
            f"CMD {json.dumps(entry_command())}",
            f"LABEL nexusflow.recipe={recipe_hash()}",
        ]
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=version, changes=changes
        )
    if not image_exists(tag, client=client):
        raise RuntimeError(f"docker import finished but {tag} is not there")
    return BuildResult(tag, built=True, seconds=time.monotonic() - started, cache_hit=cache_hit)


def image_exists(tag: str | None = None, *, client: Any = None) -> bool:
    """Return whether the sandbox image (this recipe's tag by default) is in the engine."""
    import docker.errors

    from .client import docker_client

    client = client or docker_client()
    try:
        client.images.get(tag or image_tag())
    except docker.errors.ImageNotFound:
        return False
    return True
