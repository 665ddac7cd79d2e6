"""``nexusflow sandbox``: build the sandbox image and say whether code nodes can run."""

from __future__ import annotations

import json
import sys

import click

from nexusflow_kernel.settings import Settings


@click.group()
def sandbox() -> None:
    """Build and check the Docker sandbox that runs code nodes."""


@sandbox.command()
@click.option("--force", is_flag=True, help="Build even when the image already exists.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="NEXUSFLOW_DATA_DIR",
    help="Folder of the package cache (default: the Nexus-Flow data folder).",
)
@click.option(
    "--mirror",
    envvar="NEXUSFLOW_DEBIAN_MIRROR",
    help="Debian mirror for debootstrap (default: the one apt uses here).",
)
def build(force: bool, data_dir: str | None, mirror: str | None) -> None:
    """Build the sandbox image from the recipe in the package (skipped when it exists)."""
    from pathlib import Path

    from .image import build_image
    from .runner import engine_error

    problem = engine_error()
    if problem:
        raise click.ClickException(f"{problem}; start one with scripts/setup-docker.sh")
    folder = Path(data_dir) if data_dir else Settings.from_env().data_dir
    try:
        result = build_image(folder, force=force, mirror=mirror)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.built:
        cache = "cached packages" if result.cache_hit else "downloaded packages"
        click.echo(f"built {result.tag} in {result.seconds:.1f} s ({cache})")
    else:
        click.echo(f"{result.tag} is already built")


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Say which isolation policy code nodes get and whether the image is built."""
    from .image import image_exists, image_tag
    from .isolation import effective_policy

    settings = Settings.from_env()
    from .runner import engine_error

    problem = engine_error()
    info = {
        "code_isolation": settings.code_isolation,
        "engine": "unreachable" if problem else "answers",
        "image": image_tag(),
        "image_built": (not problem) and image_exists(),
        "effective_policy": effective_policy(settings.code_isolation, engine_problem=problem),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")
    if problem:
        click.echo(f"note: {problem}")
    if not info["image_built"] and not problem:
        click.echo("note: run `nexusflow sandbox build` to build the image")
        sys.exit(1)


if __name__ == "__main__":
    sandbox()
