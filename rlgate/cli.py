"""The ``rlgate`` command line: ``train``, ``eval``, ``cores`` and ``recipes``.

Bad input (unknown core, env, agent or flag, an invalid value, a missing or mismatched
checkpoint) is one line on stderr with exit code 2, never a traceback. Only the CLI configures
logging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Annotated

import tyro

from rlgate.cores import CORES

USAGE = "usage: rlgate {train,eval,cores,recipes} [--help] [--version]"
#: what ``rlgate train --help`` says above the flags
TRAIN_HELP = (
    "Train an actor-critic with a recurrent core on a memory task. --recipe NAME starts from "
    "a named recipe (rlgate recipes lists them); the flags given as well override its settings."
)


class UsageError(ValueError):
    """Bad command-line input."""


@dataclass(frozen=True)
class EvalConfig:
    """Run a trained agent for some episodes and print its success rate and return."""

    checkpoint: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """A run folder or checkpoint file."""
    episodes: int = 100
    """Episodes to finish."""
    num_envs: int = 16
    """Environments stepped together."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    seed: int = 12345
    """Seed of the evaluation envs and action sampling."""
    greedy: bool = False
    """Take the most likely action instead of sampling."""
    report: Annotated[bool, tyro.conf.arg(aliases=("--choices",))] = False
    """The task's own report instead of success and return (--choices is the same flag). The
    Match tasks': success split by the cue's colour and by where the cue's square stands in
    the choice room, with the policy's first action there (shows a policy that remembers the
    colour but no longer explores one side), the view gate, and a linear probe of the cue's
    colour from the core output at the choice (does the core remember it?)."""
    video: str | None = None
    """Write --video-episodes episodes played by the policy to this animated GIF (a new .gif
    path) instead of reporting success."""
    video_episodes: int = 3
    """Episodes in the --video GIF."""

    def __post_init__(self):
        if self.episodes < 1 or self.num_envs < 1 or self.video_episodes < 1:
            raise ValueError("--episodes, --num-envs and --video-episodes must be >= 1")


def _one_line(text: str) -> str:
    """tyro's boxed error message as one line."""
    text = " ".join(re.sub(r"[│╭╮╰╯─┃━┏┓┗┛]+|-{3,}|[+|]-+[+|]?", " ", text).split())
    for stop in (" Argument helptext", " For full helptext", " Usage:"):
        text = text.split(stop)[0]
    if "Error parsing" in text:
        text = text.split("Error parsing", 1)[1].strip()
        text = re.sub(r"^[A-Za-z]*Config:\s*", "", text)
    else:
        text = re.sub(r"^(Value error|Invalid choice|Parsing error)\s*", "", text)
    return text[:400] or "invalid arguments"


def _error(line: str) -> None:
    """Print one error line to stderr in one write, its newline included: print() writes the
    text and the newline apart, and under torchrun the launcher's own log lines, written to
    the same stream, can land between the two."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@contextlib.contextmanager
def _captured_fds():
    """Send everything written to fds 1 and 2, and to sys.stdout and sys.stderr (which need
    not be those fds: Jupyter, pytest), into a temporary file (rich writes there)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        saved = os.dup(1), os.dup(2)
        streams = sys.stdout, sys.stderr
        text = open(tmp.fileno(), "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        sys.stdout = sys.stderr = text
        try:
            yield tmp
        finally:
            for stream in (text, sys.__stdout__, sys.__stderr__):
                if stream is not None:
                    stream.flush()
            sys.stdout, sys.stderr = streams
            text.close()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _parse(cls, args: list[str], prog: str, default=None, description: str | None = None):
    """tyro.cli with one-line errors: returns the parsed config or raises UsageError."""
    if "-h" in args or "--help" in args:
        return tyro.cli(cls, args=args, prog=prog, default=default, description=description)
    failed, text, out, unknown = False, "", None, []
    with _captured_fds() as tmp:
        try:
            out, unknown = tyro.cli(
                cls,
                args=args,
                prog=prog,
                default=default,
                description=description,
                return_unknown_args=True,
            )
        except SystemExit:
            failed = True
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    if failed:
        raise UsageError(_one_line(text))
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)} (see {prog} --help)")
    return out


def _delay_alias(args: list[str]) -> list[str]:
    """``--delay N`` (the Match tasks' distractor length) -> ``--env-option delay=N``: a
    shorthand kept for the commands written when it was a training flag."""
    out, i = [], 0
    while i < len(args):
        if args[i] == "--delay" and i + 1 < len(args):
            out += ["--env-option", f"delay={args[i + 1]}"]
            i += 2
            continue
        if args[i].startswith("--delay="):
            out += ["--env-option", f"delay={args[i].split('=', 1)[1]}"]
        else:
            out.append(args[i])
        i += 1
    return out


def _merge_repeated(args: list[str], flag: str) -> list[str]:
    """``flag a --x 1 flag b`` -> ``--x 1 flag a b``: tyro keeps only the last occurrence of a
    flag, so every value of every occurrence is gathered into one (``flag=v`` too)."""
    rest, values, i, seen = [], [], 0, False
    while i < len(args):
        arg = args[i]
        if arg == flag or arg.startswith(flag + "="):
            seen = True
            if "=" in arg and arg.startswith(flag + "="):
                values.append(arg.split("=", 1)[1])
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                values.append(args[i])
                i += 1
            continue
        rest.append(arg)
        i += 1
    return [*rest, flag, *values] if seen else rest


def _take(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of ``flag V`` or ``flag=V`` (None when absent) and the other arguments."""
    for i, arg in enumerate(args):
        if arg == flag:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise UsageError(f"{flag} expects a value")
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def _recipe_default(name: str, args: list[str]):
    """The recipe's config as the default, and the arguments with the recipe's env options
    kept beside the ones given (a given key overrides the recipe's)."""
    from rlgate.config import TrainConfig

    if "--resume" in args:
        raise UsageError("--recipe starts a new run; a resumed run keeps its config (drop it)")
    default = TrainConfig.from_recipe(name)
    if "--env-option" in args and default.env_option:
        i = args.index("--env-option")  # _merge_repeated put every value after it
        given = {item.partition("=")[0] for item in args[i + 1 :]}
        kept = [item for item in default.env_option if item.partition("=")[0] not in given]
        args = [*args[: i + 1], *kept, *args[i + 1 :]]
    return default, args


def train_config(args: list[str]):
    """The TrainConfig that ``rlgate train ARGS`` runs: a recipe's or a resumed run's config
    as the default where --recipe or --resume is given, the flags over it."""
    from rlgate import checkpoint as ckpt
    from rlgate.config import TrainConfig

    recipe, args = _take(_merge_repeated(_delay_alias(args), "--env-option"), "--recipe")
    default = None
    if recipe is not None:
        default, args = _recipe_default(recipe, args)
    if "--resume" in args:  # the saved config is the default; flags given override it
        i = args.index("--resume")
        if i + 1 >= len(args):
            raise UsageError("--resume expects a run folder or checkpoint file")
        saved = ckpt.load(args[i + 1])["config"]
        default = TrainConfig.from_dict({**saved, "resume": args[i + 1]})
    return _parse(TrainConfig, args, "rlgate train", default, TRAIN_HELP)


def _train(args: list[str]) -> int:
    from rlgate.runtime import tune_cpu_allocator
    from rlgate.train import Trainer

    recipe, _ = _take(args, "--recipe")
    cfg = train_config(args)
    tune_cpu_allocator()
    trainer = Trainer(cfg)
    main, size = trainer.world.is_main, trainer.world.size
    if trainer.num_updates == 0:
        if main:
            print(
                f"rlgate: nothing to do: {cfg.resume} has {trainer.global_step} steps of "
                f"--total-timesteps {cfg.total_timesteps}; pass a larger --total-timesteps "
                f"to train on"
            )
        return 0
    job = f" on {size} processes" if size > 1 else ""
    if main:
        print(
            f"rlgate: training {cfg.agent} with {cfg.core} on {cfg.env}{job}"
            f"{f' (recipe {recipe})' if recipe else ''} "
            f"({trainer.num_updates} updates of {cfg.batch_size * size} steps) -> {trainer.run_dir}"
        )
    try:
        result = trainer.run()
    except FloatingPointError as err:
        if trainer.saved_step is None:
            kept = f"no checkpoint was written yet; {trainer.run_dir} holds the config and logs"
        else:
            step = trainer.saved_step
            kept = f"the last good checkpoint (step {step}) is kept in {trainer.run_dir}"
        _error(f"rlgate: error: {err}; stopped, {kept}")
        return 1
    code = 0
    if result.interrupted:  # the shell's convention: 128 + the signal's number
        code = 128 + int(getattr(signal, result.signal or "SIGINT"))
    if not main:
        return code
    last = result.history[-1] if result.history else {}
    ret = last.get("charts/episodic_return", float("nan"))
    succ = last.get("charts/success_rate")
    success = f", success {succ:.3f}" if succ is not None else ""
    # a run shorter than an episode has no return to show yet
    recent = f"recent return {ret:.3f}{success}" if ret == ret else "no episode ended yet"
    sps = last.get("perf/sps", float("nan"))
    state = "done"
    if result.interrupted:
        saved = trainer.saved_step
        kept = f"checkpoint at step {saved}" if saved is not None else "no checkpoint yet"
        state = f"stopped by {result.signal}, {kept}"
    print(
        f"rlgate: {state}: {result.global_step} steps ({sps:.0f}/s), {result.updates} updates, "
        f"{recent}; tensorboard --logdir {result.run_dir.parent}"
    )
    return code


def _eval(args: list[str]) -> int:
    from rlgate.evaluate import evaluate, task_report

    cfg = _parse(EvalConfig, args, "rlgate eval")
    if cfg.video is not None:
        from rlgate.evaluate import record_video

        out = record_video(
            cfg.checkpoint, cfg.video, cfg.video_episodes, cfg.device, cfg.seed, cfg.greedy
        )
        print(
            f"rlgate: {out['episodes']} episodes of {out['env']} with {out['core']}: "
            f"{out['frames']} frames -> {out['path']}"
        )
        return 0
    run = (cfg.checkpoint, cfg.episodes, cfg.num_envs, cfg.device, cfg.seed, cfg.greedy)
    if cfg.report:
        out = task_report(*run)
        print(
            f"rlgate: {out['episodes']} episodes of {out['env']} with {out['core']}: "
            f"success rate {out['success_rate']:.3f}"
        )
        for line in out["lines"]:
            print(f"  {line}")
        return 0
    out = evaluate(*run)
    rate = out["success_rate"]
    success = f"success rate {rate:.3f}, " if rate == rate else ""  # NaN: the env has none
    print(
        f"rlgate: {out['episodes']} episodes of {out['env']} with {out['core']}: "
        f"{success}mean return {out['mean_return']:.3f}"
    )
    return 0


def _cores(args: list[str]) -> int:
    if args:
        raise UsageError(f"unrecognized arguments: {' '.join(args)}")
    canonical: dict[str, list[str]] = {}
    for name, preset in CORES.items():
        canonical.setdefault(preset.name, []).append(name)
    width = max(map(len, canonical))
    for name, names in canonical.items():
        preset = CORES[name]
        aliases = [n for n in names if n != name]
        alias = f" (aliases: {', '.join(aliases)})" if aliases else ""
        print(f"{name:<{width}}  {preset.description}{alias}")
        print(f"{'':<{width}}  options: {', '.join(preset.options)}")
    return 0


def _recipes(args: list[str]) -> int:
    from rlgate.recipes import RECIPES

    if len(args) > 1 or (args and args[0] not in RECIPES):
        raise UsageError(
            f"unknown recipe {' '.join(args)!r}; valid recipes: {', '.join(RECIPES)}"
            if len(args) == 1
            else f"unrecognized arguments: {' '.join(args)} (usage: rlgate recipes [NAME])"
        )
    for name, recipe in RECIPES.items():
        if args and name != args[0]:
            continue
        print(f"{name}: {recipe.summary}")
        print(f"  rlgate train --recipe {name}  =  rlgate train {' '.join(recipe.flags())}")
        if args:
            print(f"  result: {recipe.result}")
            print("  why:")
            for line in recipe.notes.splitlines():
                print(f"    {line}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "cores": _cores, "recipes": _recipes}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``rlgate`` console script and ``python -m rlgate``."""
    from rlgate.checkpoint import CheckpointError
    from rlgate.distributed import DistributedError

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        from rlgate import __version__

        print(f"rlgate {__version__}")
        sys.exit(0)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        print("  train  train an agent (rlgate train --help)")
        print("  eval   evaluate a checkpoint (rlgate eval --help)")
        print("  cores  list the recurrent cores and their options")
        print("  recipes  list the named training recipes (rlgate recipes NAME: why)")
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        _error(f"rlgate: error: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}")
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = COMMANDS[command](rest)
    except (UsageError, CheckpointError, ValueError) as err:
        _error(f"rlgate {command}: error: {err}")
        code = 2
    except DistributedError as err:  # a crashed or silent rank: not bad input
        _error(f"rlgate {command}: error: {err}")
        sys.stdout.flush()
        os._exit(1)  # skip tearing down the broken process group (it aborts the process)
    except BrokenPipeError:  # output piped into a program that stopped reading (| head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        # a torchrun rank: everything is written and the process group is closed. Leave without
        # the interpreter's teardown, where gloo's worker threads can still drop tensors and
        # abort the process ("terminate called without an active exception", pytorch#179291),
        # which torchrun would report as a failed job.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
