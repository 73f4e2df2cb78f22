"""`lipsync emulator`: serve the four provider protocols locally until Ctrl-C (for rehearsals by hand)."""

from __future__ import annotations

import shlex

import click

from . import handle_errors


@click.command()
@click.option("--port", default=8765, show_default=True, help="Port to listen on (0 = any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; loopback unless you mean it.")
@click.option("--latency", default=5.0, show_default=True, help="Seconds each job spends generating.")
@click.option("--queue", "queue_s", default=1.0, show_default=True, help="Seconds each job waits in the queue first.")
@handle_errors
def emulator(port: int, host: str, latency: float, queue_s: float) -> None:
    """Run the provider emulator in the foreground and print the environment that points a client at it.

    Only the printed keys are accepted, so a client with a wrong key sees the provider's auth error."""
    from ..emulator import Emulator, EmulatorSettings
    from ..providers import PROVIDER_NAMES

    keys = {name: f"test-{name}-key" for name in PROVIDER_NAMES}
    emu = Emulator(EmulatorSettings(latency_s=latency, queue_s=queue_s, port=port, host=host, api_keys=keys))
    emu.start()
    try:
        click.echo(f"emulator listening on {emu.root} (Ctrl-C to stop)", err=True)
        for name, url in emu.base_urls.items():
            click.echo(f"  {name:12} {url}", err=True)
        click.echo("# point a client at it:", err=True)
        for var, value in emu.env().items():
            click.echo(f"export {var}={shlex.quote(value)}")
        emu.wait()
    except KeyboardInterrupt:
        click.echo("stopping emulator", err=True)
    finally:
        emu.stop()
