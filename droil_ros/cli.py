"""The ``droil`` command. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from droil_ros.errors import DroilError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def cmd_sim(args) -> int:
    from droil_ros.sim.envs import make_env
    from droil_ros.sim.rollout import make_controller, run_episode, summarise

    env = make_env(args.robot, args.task, args.perturb)
    controller = make_controller(args.controller, env)
    episodes = [run_episode(env, controller, args.seed + i, args.seconds)
                for i in range(args.episodes)]
    result = {
        "robot": env.robot.id, "task": env.task.name, "controller": args.controller,
        "perturbation": str(env.perturbation), "seed": args.seed,
        **summarise(episodes), "episodes": [e.to_dict() for e in episodes],
    }
    speed = "" if result["mean_speed"] is None else f", mean speed {result['mean_speed']:.3f} m/s"
    tilt = "" if result["max_tilt"] is None else f", max tilt {result['max_tilt']:.3f} rad"
    print(f"{env.robot.id}/{env.task.name} {args.controller} [{result['perturbation']}]: "
          f"{args.episodes} episode(s), falls {sum(e.fell for e in episodes)}, "
          f"return {result['return']:.1f}, survived {result['seconds']:.2f} s{tilt}{speed}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_bench(args) -> int:
    if args.name == "lqr":
        from droil_ros.bench import lqr

        lqr.run(args.robot, args.episodes or (10 if args.quick else 50), args.seed,
                Path(args.out), quick=args.quick)
        return 0
    raise DroilError(f"unknown benchmark '{args.name}'")


def build_parser() -> Parser:
    parser = Parser(prog="droil", description="From demonstrations to robust deployed policies.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sim = sub.add_parser("sim", help="run a controller in closed loop in the simulator")
    sim.add_argument("--robot", default="wheel_legged", help="robot spec id or YAML path")
    sim.add_argument("--controller", default="lqr", help="lqr | zero")
    sim.add_argument("--task", default=None, help="task of the robot spec (default: its first)")
    sim.add_argument("--seconds", type=positive_float, default=None,
                     help="episode length (default: the task's)")
    sim.add_argument("--episodes", type=positive_int, default=1)
    sim.add_argument("--perturb", default=None,
                     help="e.g. 'mass=1.5,friction=0.3' or a YAML file")
    sim.add_argument("--seed", type=non_negative_int, default=0)
    sim.add_argument("--json", default=None, help="write the result as JSON here")
    sim.set_defaults(func=cmd_sim)

    bench = sub.add_parser("bench", help="benchmarks; results under docs/results/")
    bench.add_argument("name", choices=["lqr"])
    bench.add_argument("--robot", default="wheel_legged")
    bench.add_argument("--episodes", type=positive_int, default=None)
    bench.add_argument("--seed", type=non_negative_int, default=0)
    bench.add_argument("--quick", action="store_true", help="fewer cases and episodes")
    bench.add_argument("--out", default="docs/results")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DroilError as exc:
        print(f"droil {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("droil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
