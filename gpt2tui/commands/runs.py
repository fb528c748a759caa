"""`gpt2tui runs`: the runs on disk, newest first, with their state and best val loss."""

from __future__ import annotations

import json
import time

import click

from gpt2tui.cli import option


@click.command()
@option("--runs-dir", default=None, type=click.Path(file_okay=False), help="Where runs live [runs].")
@option("--json", "as_json", is_flag=True, help="One JSON object per run, one per line.")
@click.pass_context
def runs(ctx: click.Context, runs_dir, as_json) -> None:
    """List training runs: state, step, best val loss, when each was last heard from, and the
    ETA of those running (the one the console's dashboard shows).

    A run whose process died without saying so shows as 'stale'.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from gpt2core.init_from import started_from
    from gpt2core.printable import printable
    from gpt2core.run_read import read_progress
    from gpt2core.rundir import list_runs
    from gpt2core.states import LIVE_RUN_STATES, RunState
    from gpt2tui.humanize import age, duration, number

    root = runs_dir or (ctx.obj or {}).get("runs_dir") or "runs"
    found = list_runs(root)
    now = time.time()
    # A running run's ETA, from its metrics records (read only for runs that are live).
    etas = {r.name: read_progress(r.path).eta(now) for r in found if r.state in LIVE_RUN_STATES}
    if as_json:
        for r in found:
            click.echo(
                json.dumps(
                    {
                        "name": r.name,
                        "state": r.state,
                        "step": r.step,
                        "max_steps": r.max_steps,
                        "best_val_loss": r.best_val_loss,
                        "started": r.started,
                        "heartbeat": r.heartbeat,
                        "pid": r.pid,
                        "host": r.host,
                        "message": r.message,
                        "init_from": started_from(r.path),  # where a fine-tuned run's weights came from
                        "eta_s": etas[r.name].seconds if etas.get(r.name) else None,
                        "ends_by": str(etas[r.name].limit) if etas.get(r.name) else None,  # max_steps / max_epochs / time_budget
                    }
                )
            )
        return
    if not found:
        click.echo(f"no runs in {printable(root)}/ yet; start one with: gpt2tui train", err=True)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("run", "left"), ("state", "left"), ("step", "right"), ("best val loss", "right"), ("last heard", "right"), ("ETA", "right"), ("started", "left"), ("from", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    colours = {RunState.RUNNING: "green", RunState.FINISHED: "cyan", RunState.STOPPED: "yellow", RunState.FAILED: "red", RunState.STALE: "red"}
    for r in found:
        steps = f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else "–"
        heard = f"{age(now - r.heartbeat)} ago" if r.heartbeat else "–"
        eta = etas.get(r.name)
        eta_cell = duration(eta.seconds) if eta else "–"  # which limit it is for: --json's ends_by
        state = Text(r.state, style=colours.get(r.state, "white"))
        init = started_from(r.path)
        origin = Text(printable(init["source"])) if init else "scratch"  # --init-from SOURCE as typed: user text, never markup
        # A folder name is anyone's text: Text (never markup), control characters escaped (never sent raw to the terminal).
        table.add_row(Text(printable(r.name)), state, steps, number(r.best_val_loss), heard, eta_cell, started, origin)
    Console(soft_wrap=False).print(table)
