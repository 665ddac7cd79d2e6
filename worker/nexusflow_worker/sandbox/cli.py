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

    from .client import engine_error
    from .image import build_image

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
    from .client import engine_error
    from .image import image_exists, image_tag
    from .isolation import effective_policy

    settings = Settings.from_env()
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
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")
    if problem:
        click.echo(f"note: {problem}", err=True)
    if not info["image_built"] and not problem:
        click.echo("note: run `nexusflow sandbox build` to build the image", err=True)
    if info["effective_policy"] == "unavailable" or (
        info["effective_policy"] == "docker" and not info["image_built"]
    ):
        sys.exit(1)


@sandbox.command()
@click.option("--runs", default=20, show_default=True, help="How many containers to run.")
def bench(runs: int) -> None:
    """Time a trivial Python code run, container start to finish, and print the median."""
    import statistics
    import time

    from .client import engine_error
    from .protocol import Limits
    from .runner import run_code

    problem = engine_error()
    if problem:
        raise click.ClickException(problem)
    source = "def main(inputs, params):\n    return inputs['n'] + 1"
    times = []
    for n in range(runs):
        started = time.perf_counter()
        output, _ = run_code("python", source, {"inputs": {"n": n}}, limits=Limits(timeout_s=30))
        times.append(time.perf_counter() - started)
        if output != n + 1:
            raise click.ClickException(f"run {n} returned {output!r}")
    click.echo(
        f"{runs} runs: median {statistics.median(times) * 1000:.0f} ms, "
        f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    sandbox()
