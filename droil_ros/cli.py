"""The ``droil`` command. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
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


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs, values read as YAML scalars (``balance=false``, ``alpha=0.5``)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DroilError(f"--set expects key=value, got '{item}'")
        parsed = yaml.safe_load(value)
        overrides[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return overrides


def cmd_collect(args) -> int:
    from droil_ros.data.collect import collect

    dataset = collect(args.robot, args.expert, args.episodes, seed=args.seed, perturb=args.perturb,
                      task=args.task, seconds=args.seconds, noise=args.noise, domain=args.domain,
                      demonstrators=args.demonstrators)
    path = dataset.save(args.out)
    print(f"{path}: {len(dataset)} transitions, {dataset.n_episodes} episodes, "
          f"{int(dataset.terminals.sum())} falls, robot {dataset.robot_id}, hash {dataset.hash}")
    return 0


def cmd_dataset(args) -> int:
    from droil_ros.data import load_dataset
    from droil_ros.data.minari_io import from_minari, to_minari
    from droil_ros.robots import load_spec

    root = Path(args.root) if args.root else None
    if args.action != "from-bag":
        if len(args.source) > 1:
            raise DroilError(f"{args.action} takes one source, got {len(args.source)}")
        args.source = args.source[0]
    if args.action == "info":
        d = load_dataset(args.source)
        print(f"{args.source}: {len(d)} transitions, {d.n_episodes} episodes, robot {d.robot_id}, "
              f"{int(d.terminals.sum())} terminal, {int(d.timeouts.sum())} time-outs, rewards "
              f"{'yes' if d.meta.get('has_rewards') else 'no'}, hash {d.hash}\n  source: {d.meta['source']}")
    elif args.action == "from-bag":
        from droil_ros.data.bag import read_bag_transitions

        if not args.robot or not args.out:
            raise DroilError("from-bag needs --robot and --out")
        robot = load_spec(args.robot)
        transitions = read_bag_transitions(args.source, robot, task=args.task, pairing=args.pairing,
                                           resume_after=args.resume_after, hold_max_age=args.hold_max_age)
        dataset = transitions.to_dataset(robot)
        print(f"{dataset.save(args.out)}: {len(dataset)} transitions, {dataset.n_episodes} episodes, "
              f"{int(dataset.terminals.sum())} falls, robot {dataset.robot_id}, hash {dataset.hash}")
        print("\n".join(transitions.details) if args.report else f"  {transitions.report}")
    elif args.action == "to-minari":
        print(to_minari(load_dataset(args.source), args.id, root))
    else:
        robot = load_spec(args.robot) if args.robot else None
        dataset = from_minari(args.source, root, robot)
        print(f"{dataset.save(args.out)}: {len(dataset)} transitions")
    return 0


def cmd_train(args) -> int:
    from droil_ros.pipeline import train_and_export
    from droil_ros.robots import load_spec

    robot = load_spec(args.robot) if args.robot else None
    result = train_and_export(args.algo, args.data, args.out, robot=robot, steps=args.steps,
                              n_seeds=args.seeds, seed=args.seed, preset=args.config,
                              overrides=parse_overrides(args.set), reuse=args.resume)
    print(f"{args.algo}: {result.steps} steps x {args.seeds} seed(s) in {result.seconds:.1f} s "
          f"({result.steps_per_second:.0f} steps/s), final loss {result.final.get('loss', float('nan')):.4g}")
    for path in result.policies:
        print(f"  policy {path}")
    print(f"  log    {result.log}")
    return 0


def cmd_eval(args) -> int:
    from droil_ros.eval.grid import evaluate, load_grid, plot, summary_table
    from droil_ros.execution import executor
    from droil_ros.robots import load_spec
    from droil_ros.sim.envs import make_env
    from droil_ros.sim.rollout import make_controller

    if not (args.grid or args.robot):
        raise DroilError("give --robot (its shipped grid) or --grid")
    robot = load_spec(args.robot) if args.robot else None
    grid = load_grid(args.grid or robot.id)
    if robot and robot.id != grid.robot:
        raise DroilError(f"grid is for robot '{grid.robot}', --robot is '{robot.id}'")
    env = make_env(robot or grid.robot, grid.task)
    policies = {}
    for path in args.policy:
        name = Path(path).stem
        if name in policies:
            raise DroilError(f"two policies are named '{name}': rename one file")
        policies[name] = make_controller(path, env)
    with executor(args.workers, args.ray) as units:
        result = evaluate(policies, grid, episodes=args.episodes, seed=args.seed, workers=units)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
    print(summary_table(result))
    return 0


def cmd_bringup(args) -> int:
    from droil_ros.bringup import command, launch_arguments, load_bringup, supervise

    if args.show_args:
        for a in launch_arguments(args.name):
            choices = f" (one of: {', '.join(repr(c) for c in a.choices)})" if a.choices else ""
            print(f"    '{a.name}':\n        {a.description}{choices}\n        (default: '{a.default}')")
        return 0
    nodes = load_bringup(args.name, args.overrides)
    if args.dry_run:
        for node in nodes:
            print(("" if node.enabled else "# disabled: ") + " ".join(command(node)))
        return 0
    return supervise(nodes, log=lambda line: print(f"droil bringup: {line}", flush=True))


# benchmarks whose module reads the parsed arguments itself: name -> droil_ros.bench.<module>.main(args)
CLI_BENCHES = {"realtime": "realtime", "small-data": "data_regimes", "mixed-data": "data_regimes",
               "cross-domain": "cross_domain"}


def cmd_bench(args) -> int:
    if args.name == "lqr":
        from droil_ros.bench import lqr

        lqr.run(args.robot, args.episodes or (10 if args.quick else 50), args.seed,
                Path(args.out), quick=args.quick)
        return 0
    if args.name == "training-speed":
        from droil_ros.bench import speed

        speed.run(args.robot, Path(args.out), quick=args.quick, seeds=args.seeds)
        return 0
    if args.name == "tune":
        from droil_ros.bench import tune

        tune.run(args.robot, Path(args.out), quick=args.quick, n_seeds=args.seeds, seed=args.seed,
                 steps=args.steps, episodes=args.episodes, workers=args.workers, sweep=args.sweep)
        return 0
    if args.name == "robustness":
        from droil_ros.bench import robustness

        robustness.run(args.robot, Path(args.out), quick=args.quick, n_seeds=args.seeds,
                       seed=args.seed, steps=args.steps, episodes=args.episodes, workers=args.workers,
                       learners=tuple(args.learner or robustness.LEARNERS),
                       overrides=parse_overrides(args.set), lr_decay=args.lr_decay,
                       select_every=args.select_every, select_episodes=args.select_episodes,
                       ray=args.ray)
        return 0
    if args.name in CLI_BENCHES:
        module = importlib.import_module(f"droil_ros.bench.{CLI_BENCHES[args.name]}")
        return module.main(args)
    raise DroilError(f"unknown benchmark '{args.name}'")


def cmd_demo(args) -> int:
    from droil_ros.demo import DemoConfig, run

    given = {"learners": tuple(args.learner), "perturb": args.perturb,
             "out": Path(args.out) if args.out else None}
    cfg = DemoConfig(robot=args.robot, task=args.task, record_seconds=args.seconds,
                     episode_seconds=args.episode_seconds, steps=args.steps, seeds=args.seeds,
                     eval_episodes=args.eval_episodes, eval_seconds=args.eval_seconds, seed=args.seed,
                     **{k: v for k, v in given.items() if v})
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the nodes too
    run(cfg, log=lambda text: print(text, flush=True))
    return 0


def cmd_expert(args) -> int:
    import torch

    from droil_ros import experts

    torch.set_num_threads(args.threads)
    if args.action == "train":
        command = (f"droil expert train --robot {args.robot} --algo {args.algo} --steps {args.steps} "
                   f"--seed {args.seed}")
        overrides = {k: v for k, v in (("checkpoint_minutes", args.checkpoint_minutes),
                                       ("eval_every", args.eval_every)) if v is not None}
        experts.train(args.robot, args.steps, algo=args.algo, seed=args.seed, run_dir=args.run_dir,
                      resume=not args.no_resume, stop_at=args.stop_at, command=command,
                      log=lambda text: print(text, flush=True), **overrides)
    elif args.action == "export":
        path = experts.export(args.robot, args.out, args.run_dir, args.checkpoint)
        result = experts.evaluate(args.robot, path, episodes=args.episodes)
        print(f"{path}: nominal return {result['return_mean']:.1f} ± {result['return_std']:.1f} over "
              f"{result['episodes']} episodes; {experts.write_report(result, path)}")
    elif args.action == "eval":
        result = experts.evaluate(args.robot, args.policy, episodes=args.episodes)
        print(json.dumps(result, indent=2))
        if args.write:
            print(experts.write_report(result, Path(args.policy) if args.policy
                                       else experts.expert_path(result["robot"])))
    else:
        dataset = experts.dataset(args.robot, args.size, args.policy, seed=args.seed)
        out = args.out or Path("runs", "experts", args.robot, "dataset.npz")
        print(f"{dataset.save(out)}: {len(dataset)} transitions, {dataset.n_episodes} episodes, "
              f"{int(dataset.terminals.sum())} falls, robot {dataset.robot_id}, hash {dataset.hash}")
    return 0


ROBOT_HELP = "robot spec: an id (config/robots or a DROIL_ROBOT_PATH folder) or a YAML path"
THREADS_HELP = ("torch threads (more pay only on an idle machine: with the cores busy, threads wait "
                "for each other and training runs over 10x slower)")
# the registry's names, without importing torch to build the parser (test_cli checks they agree)
LEARNERS = ("bc", "drbc", "drbc_faithful", "be_droil", "be_droil_nu0", "be_droil_legacy", "bc_dyn",
            "bc_dyn_2phase", "dmil", "dwbc", "d2mil", "iql", "droco")
RAY_HELP = ("run the units on a Ray cluster instead of local processes: 'local' (start Ray here), "
            "'auto' (the cluster this machine joined with ray start) or the head's address; needs "
            "pip install 'droil_ros[ray]' and --out on a folder every node sees")


def build_parser() -> Parser:
    parser = Parser(prog="droil", description="From demonstrations to robust deployed policies.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sim = sub.add_parser("sim", help="run a controller in closed loop in the simulator")
    sim.add_argument("--robot", default="wheel_legged", help=ROBOT_HELP)
    sim.add_argument("--controller", default="lqr",
                     help="lqr | human (nominal simulated person) | zero | PATH.onnx")
    sim.add_argument("--task", default=None, help="task of the robot spec (default: its first)")
    sim.add_argument("--seconds", type=positive_float, default=None,
                     help="episode length (default: the task's)")
    sim.add_argument("--episodes", type=positive_int, default=1)
    sim.add_argument("--perturb", default=None,
                     help="e.g. 'mass=1.5,friction=0.3' or a YAML file")
    sim.add_argument("--seed", type=non_negative_int, default=0)
    sim.add_argument("--json", default=None, help="write the result as JSON here")
    sim.set_defaults(func=cmd_sim)

    collect = sub.add_parser("collect", help="collect a transition dataset in the simulator")
    collect.add_argument("--robot", default="wheel_legged", help=ROBOT_HELP)
    collect.add_argument("--expert", default="lqr",
                         help="lqr | noisy_lqr | human (simulated joystick demonstrators) | PATH.onnx")
    collect.add_argument("--episodes", type=positive_int, default=10)
    collect.add_argument("--out", required=True, help="dataset file (.npz)")
    collect.add_argument("--task", default=None)
    collect.add_argument("--seconds", type=positive_float, default=None,
                         help="episode length (default: the task's)")
    collect.add_argument("--perturb", default=None, help="dynamics of the data, e.g. mass=1.5")
    collect.add_argument("--noise", type=float, default=0.3,
                         help="noisy_lqr: action noise std as a fraction of the half range")
    collect.add_argument("--demonstrators", type=positive_int, default=1,
                         help="human: demonstrators drawn from --seed, taking turns per episode")
    collect.add_argument("--domain", choices=["target", "source"], default="target")
    collect.add_argument("--seed", type=non_negative_int, default=0)
    collect.set_defaults(func=cmd_collect)

    ds = sub.add_parser("dataset", help="inspect datasets; from rosbag2; Minari export/import")
    ds.add_argument("action", choices=["info", "from-bag", "to-minari", "from-minari"])
    ds.add_argument("source", nargs="+",
                    help="dataset file (.npz); for from-bag a rosbag2, or the bags of one session "
                         "(e.g. joints and IMU recorded apart); a Minari id")
    ds.add_argument("--id", default=None, help="to-minari: Minari dataset id, e.g. droil/wl-lqr-v0")
    ds.add_argument("--out", default=None, help="from-bag, from-minari: dataset file to write")
    ds.add_argument("--robot", default=None,
                    help=f"from-bag: {ROBOT_HELP}; from-minari: the robot of a foreign dataset")
    ds.add_argument("--task", default=None, help="from-bag: task whose reward and fall apply")
    ds.add_argument("--pairing", choices=["answer", "hold"], default=None,
                    help="from-bag: a state's action is the command computed from it (answer) or "
                         "the setpoint in force at it (hold); default: the spec's ros.pairing")
    ds.add_argument("--resume-after", type=positive_float, default=1.0, metavar="SECONDS",
                    help="from-bag: after a fall, a new episode once the tilt is within the task's "
                         "init_tilt this long (default 1)")
    ds.add_argument("--hold-max-age", type=positive_float, default=None, metavar="SECONDS",
                    help="from-bag, hold pairing: a setpoint older than this at a state is not in "
                         "force (the robot driver's command timeout): the state is dropped "
                         "(default: no limit)")
    ds.add_argument("--report", action="store_true",
                    help="from-bag: print what was kept and dropped, and why")
    ds.add_argument("--root", default=None, help="Minari datasets folder (MINARI_DATASETS_PATH)")
    ds.set_defaults(func=cmd_dataset)

    train = sub.add_parser("train", help="train a learner on a dataset and export ONNX")
    train.add_argument("--algo", required=True, help="a learner: " + ", ".join(LEARNERS))
    train.add_argument("--data", required=True, help="dataset file (.npz)")
    train.add_argument("--out", required=True, help="policy file (.onnx); several seeds: _seedN")
    train.add_argument("--robot", default=None,
                       help=f"default: the spec the dataset carries; given ({ROBOT_HELP}), it must be "
                            "the same version (hash)")
    train.add_argument("--steps", type=positive_int, default=None, help="default: the preset's")
    train.add_argument("--seeds", type=positive_int, default=1, help="seeds trained as one batch")
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--config", default="paper", help="preset: fast | paper")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. --set alpha=0.5 --set f=kl")
    train.add_argument("--threads", type=positive_int, default=1, help=THREADS_HELP)
    train.add_argument("--resume", action="store_true",
                       help="save the learner to <out stem>.ckpt every 10 min; run again with the same "
                            "settings to go on from it (a run that finished is not trained again)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate policies on a perturbation grid")
    ev.add_argument("--policy", nargs="+", required=True, help="ONNX files (or lqr, zero)")
    ev.add_argument("--robot", default=None, help=f"{ROBOT_HELP} (its grid: config/grids/<id>.yaml)")
    ev.add_argument("--grid", default=None, help="grid YAML (default: the robot's)")
    ev.add_argument("--episodes", type=positive_int, default=None, help="per magnitude")
    ev.add_argument("--seed", type=non_negative_int, default=0)
    ev.add_argument("--workers", type=positive_int, default=1, help="processes")
    ev.add_argument("--ray", default=None, metavar="ADDRESS", help=RAY_HELP)
    ev.add_argument("--json", default=None)
    ev.add_argument("--plot", default=None, help="PNG of return against magnitude")
    ev.set_defaults(func=cmd_eval)

    bringup = sub.add_parser("bringup", help="start the nodes of config/bringup/NAME.yaml, supervised")
    bringup.add_argument("name", help="sim | robot | record | train, or a bringup YAML path")
    bringup.add_argument("overrides", nargs="*", metavar="NAME:=VALUE",
                         help="node.param:=value, node.enabled:=false, or a global argument "
                              "(namespace, use_sim_time, robot, policy_path), e.g. "
                              "sim_bridge.mode:=lockstep policy.enabled:=true use_sim_time:=true")
    bringup.add_argument("--show-args", action="store_true",
                         help="list the arguments the bringup declares, as ros2 launch does")
    bringup.add_argument("--dry-run", action="store_true", help="print the commands only")
    bringup.set_defaults(func=cmd_bringup)

    demo = sub.add_parser(
        "demo", help="the whole product: record LQR demos over ROS, train, hot-swap on a perturbed robot",
        description="Record LQR demonstrations through the ROS nodes (sim_bridge, lqr_expert, "
                    "demo_recorder) into a rosbag2, build the dataset from the bag, train each learner "
                    "(seeds batched) and export ONNX, then run the sim on a perturbed "
                    "robot in real time: the LQR node for reference, then the policy node with each "
                    "learner hot-swapped in. Prints a table; everything stays in the run folder.")
    demo.add_argument("--robot", default="wheel_legged", help=ROBOT_HELP)
    demo.add_argument("--task", default="stand", help="task of the robot spec")
    demo.add_argument("--seconds", type=positive_float, default=50.0,
                      help="seconds of demonstrations (sim time; 200 Hz: 10,000 transitions)")
    demo.add_argument("--episode-seconds", type=positive_float, default=5.0,
                      help="length of each recorded episode (each from a random initial tilt)")
    demo.add_argument("--learner", action="append", default=[],
                      help="learner to train and deploy, repeat (default: bc, drbc, be_droil)")
    demo.add_argument("--steps", type=positive_int, default=3000, help="training steps per learner")
    demo.add_argument("--seeds", type=positive_int, default=3,
                      help="seeds trained as one batch; seed 0 is deployed")
    demo.add_argument("--perturb", default=None,
                      help="dynamics of the deployment robot (default 'payload=1.5,friction=0.4,gear=0.6': "
                           "1.5 kg payload, floor friction x0.4, motors x0.6)")
    demo.add_argument("--eval-episodes", type=positive_int, default=4, help="episodes per controller")
    demo.add_argument("--eval-seconds", type=positive_float, default=10.0, help="seconds per episode")
    demo.add_argument("--seed", type=non_negative_int, default=0)
    demo.add_argument("--out", default=None, help="run folder (default: runs/demo_<time>)")
    demo.add_argument("--threads", type=positive_int, default=1, help=THREADS_HELP)
    demo.set_defaults(func=cmd_demo)

    expert = sub.add_parser("expert", help="RL experts of the locomotion robots (stable-baselines3)")
    expert.add_argument("action", choices=["train", "export", "eval", "dataset"],
                        help="train (resumable) | export ONNX + nominal-return JSON | eval | dataset "
                             "(DRBC protocol)")
    expert.add_argument("--robot", required=True, help="hopper | walker2d | halfcheetah | ant")
    expert.add_argument("--algo", default="td3", help="train: td3 | sac")
    expert.add_argument("--steps", type=positive_int, default=1_000_000, help="train: total env steps")
    expert.add_argument("--seed", type=non_negative_int, default=0, help="train; dataset: first episode")
    expert.add_argument("--run-dir", default=None, help="default: runs/experts/<robot>")
    expert.add_argument("--no-resume", action="store_true", help="train: start over")
    expert.add_argument("--stop-at", type=float, default=None,
                        help="train: stop once an evaluation reaches this return (default: the robot's "
                             "target; inf: never)")
    expert.add_argument("--eval-every", type=positive_int, default=None, help="train: env steps")
    expert.add_argument("--checkpoint-minutes", type=positive_float, default=None, help="train")
    expert.add_argument("--checkpoint", choices=["best", "last"], default="best", help="export")
    expert.add_argument("--out", default=None,
                        help="export: default models/experts/<robot>.onnx; dataset: default "
                             "runs/experts/<robot>/dataset.npz")
    expert.add_argument("--policy", default=None, help="eval, dataset: default models/experts/<robot>.onnx")
    expert.add_argument("--episodes", type=positive_int, default=10, help="export, eval")
    expert.add_argument("--write", action="store_true", help="eval: rewrite the JSON beside the policy")
    expert.add_argument("--size", type=positive_int, default=None,
                        help="dataset: transitions (default: DRBC's, e.g. hopper 2000)")
    expert.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    expert.set_defaults(func=cmd_expert)

    bench = sub.add_parser("bench", help="benchmarks; results under docs/results/")
    bench.add_argument("name", choices=["lqr", "robustness", "training-speed", "tune", *CLI_BENCHES])
    bench.add_argument("--robot", default="wheel_legged", help=ROBOT_HELP)
    bench.add_argument("--episodes", type=positive_int, default=None)
    bench.add_argument("--seed", type=non_negative_int, default=0)
    bench.add_argument("--quick", action="store_true", help="fewer cases, steps and episodes")
    bench.add_argument("--seeds", type=positive_int, default=3, help="training seeds")
    bench.add_argument("--steps", type=positive_int, default=None, help="training steps")
    bench.add_argument("--workers", type=positive_int, default=2,
                       help="local processes (robustness: learners training side by side, then the "
                            "grid's episodes)")
    bench.add_argument("--ray", default=None, metavar="ADDRESS", help="robustness: " + RAY_HELP)
    bench.add_argument("--out", default="docs/results")
    bench.add_argument("--learner", action="append", default=[],
                       help="robustness: learners to run (default: all); repeat")
    bench.add_argument("--sweep", default="alpha", choices=["alpha", "adversary"],
                       help="tune: which BE-DROIL sweep (droil_ros/bench/tune.py SWEEPS)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="robustness: be_droil config override, e.g. --set k_dual=5")
    bench.add_argument("--lr-decay", type=float, default=1.0, metavar="RATE",
                       help="robustness: every learner's policy lr x RATE every 10,000 steps (DRBC: 0.9)")
    bench.add_argument("--select-every", type=non_negative_int, default=0, metavar="STEPS",
                       help="robustness: also evaluate each seed's best-nominal checkpoint, scored every "
                            "STEPS training steps (a multiple of 100); 0: the last checkpoint only")
    bench.add_argument("--select-episodes", type=positive_int, default=5,
                       help="robustness: unperturbed episodes per best-nominal score")
    bench.add_argument("--threads", type=positive_int, default=1,
                       help=THREADS_HELP + "; evaluation workers use 1 each")
    bench.add_argument("--thread-priority", type=non_negative_int, default=0,
                       help="realtime: SCHED_FIFO priority of the policy node's loop (0: OS default)")
    bench.add_argument("--cpu-hogs", type=non_negative_int, default=0,
                       help="realtime: processes that only burn CPU, run beside the whole measurement")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C (SIGINT) interrupts every command, also one started as a background job of a script,
    # which inherits SIGINT ignored: `droil demo` there ran on through recording and training
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("train", "bench", "demo"):
        import torch

        torch.set_num_threads(args.threads)
    try:
        code = args.func(args)
    except DroilError as exc:
        print(f"droil {args.command}: error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("droil: interrupted", file=sys.stderr)
        code = 130
    graph = sys.modules.get("droil_ros.nodes.graph")  # imported only by commands on the ROS graph
    if graph is not None and graph.LEFT_OPEN:
        graph.exit_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
