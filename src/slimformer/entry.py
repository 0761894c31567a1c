"""Run the command line app: every failure becomes one `error:` line on stderr and a documented exit code.

Exit codes: 0 success; 1 an error in the input, the environment or the run (bad model, data, recipe or
output path, disk full, ...); 2 a usage error (unknown or missing option, a value of the wrong type);
130 interrupted (Ctrl-C; re-running the same command resumes). Bugs still show a traceback.
"""
from __future__ import annotations

import sys
from typing import Any, NoReturn

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
INTERRUPTED = "interrupted (re-run the same command to resume)"


def console() -> NoReturn:
    """The `slimformer` command and `python -m slimformer`: a Ctrl-C while the CLI is still importing exits like
    one during a run (one line, 130), not with a traceback."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    main()
    sys.exit(0)


def _click_exceptions() -> Any:
    try:  # typer >= 0.24 vendors click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover
        from click import exceptions
    return exceptions


def _fail(message: str, code: int) -> NoReturn:
    import typer

    text = " ".join(str(message).split())  # one line, whatever the message held
    typer.secho(f"error: {text}", fg="red", err=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    import typer

    typer.secho(INTERRUPTED, fg="yellow", err=True)
    sys.exit(EXIT_INTERRUPTED)


def run(app: Any, args: list[str] | None = None, prog_name: str = "slimformer") -> NoReturn:
    """Run the typer app in non-standalone mode and map every outcome to one line and an exit code."""
    import typer

    from .errors import SlimformerError
    from .outputs import write_failure

    cx = _click_exceptions()
    try:
        rv = app(args=args, prog_name=prog_name, standalone_mode=False)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Abort:  # click turns Ctrl-C (and EOF at a prompt) into Abort
        _interrupted()
    except cx.NoArgsIsHelpError as e:
        e.show()
        sys.exit(EXIT_USAGE)
    except cx.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else prog_name
        _fail(f"{e.format_message()} (see '{cmd} --help')", EXIT_USAGE)
    except cx.ClickException as e:
        _fail(e.format_message(), e.exit_code or EXIT_ERROR)
    except SlimformerError as e:
        _fail(str(e), EXIT_ERROR)
    except OSError as e:
        reason = write_failure(e)
        if reason:
            _fail(f"cannot write {e.filename or 'the output'}: {reason}", EXIT_ERROR)
        _fail(str(e), EXIT_ERROR)
    except Exception as e:
        if type(e).__name__ == "ValidationError" and hasattr(e, "errors"):  # pydantic, without importing it
            err = e.errors()[0]
            _fail(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", EXIT_ERROR)
        reason = write_failure(e)
        if reason:
            _fail(f"cannot write the output: {reason}", EXIT_ERROR)
        raise
    if rv == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130), returned in this mode
        _interrupted()
    sys.exit(rv if isinstance(rv, int) else 0)
